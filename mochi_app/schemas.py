"""The request people send, and its validation: the one place request parameters are checked."""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from mochi_app.config import Limits
from mochi_app.work import WorkLimit

# Tokens in a text, or None when they cannot be counted yet (no worker has published its tokenizer).
CountTokens = Callable[[str], int | None]

MAX_SEED = 2**32 - 1
UNCOUNTED_EXTRA_TOKENS = 2  # tokens no text pays for: SentencePiece's leading "▁" and the end-of-text token
FRAMES_PER_LATENT = 6  # Mochi's VAE compresses time 6x: valid frame counts are 6k + 1.
MIN_NUM_FRAMES = FRAMES_PER_LATENT + 1
SIDE_MULTIPLE_PX = 16  # 8x spatial VAE compression times the transformer's 2x2 patches.
ALLOWED_CONTROL_CHARS = frozenset("\n\t")
# Format characters (zero-width, BOM, bidi controls, tags), separators and controls: no text of their own.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})
# Mochi's linear-quadratic sigma schedule divides by num_inference_steps // 2: one step crashes it.
MIN_NUM_INFERENCE_STEPS = 2


class InvalidRequest(ValueError):
    """A request broke one or more rules; `errors` maps each field to a message quoting the value."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors.values()))


def token_limit_message(field: str, tokens: int, limit: int) -> str:
    return f"{field} is {tokens} tokens long; the limit is {limit}. Shorten it."


def most_tokens(text: str) -> int:
    """The most tokens any of our tokenizers can make of `text`, for when the model's is not known yet.

    T5's SentencePiece and byte-level BPE alike make each token of at least one byte of the normalized
    (NFKC, which can lengthen a character up to 18-fold) text, plus a leading "▁" and the end-of-text token.
    """
    return len(unicodedata.normalize("NFKC", text).encode()) + UNCOUNTED_EXTRA_TOKENS


def snap_num_frames(num_frames: int) -> int:
    """The valid frame count (6k + 1, at least 7) nearest to `num_frames`; ties go up."""
    k = max(1, (num_frames - 1 + FRAMES_PER_LATENT // 2) // FRAMES_PER_LATENT)
    return k * FRAMES_PER_LATENT + 1


class GenerationRequest(BaseModel):
    """One text-to-video request, in diffusers' parameter names.

    Build it with `GenerationRequest.parse(data, limits, count_tokens)`: that applies the limits and
    resolves a random seed. Records read back from Redis skip the limits (no validation context).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prompt: str
    negative_prompt: str = ""
    num_frames: int = 85
    height: int = 480
    width: int = 848
    num_inference_steps: int = 64
    guidance_scale: float = Field(default=4.5, allow_inf_nan=False)
    seed: int | None = None
    fps: int = 30

    @property
    def rendered_num_frames(self) -> int:
        """What the worker renders: `num_frames` snapped to the nearest valid count."""
        return snap_num_frames(self.num_frames)

    @classmethod
    def parse(
        cls, data: Mapping[str, Any], limits: Limits, count_tokens: CountTokens | None = None
    ) -> GenerationRequest:
        """Validate `data` against `limits`; raise InvalidRequest naming each bad field and value."""
        context = {"limits": limits, "count_tokens": count_tokens}
        try:
            request = cls.model_validate(dict(data), context=context)
        except ValidationError as exc:
            raise InvalidRequest(_messages(exc)) from None
        if request.seed is None:
            request = request.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})
        return request

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _check_text(cls, value: str, info: ValidationInfo) -> str:
        name = info.field_name or "prompt"
        value = value.strip()
        if not any(unicodedata.category(c) not in INVISIBLE_CATEGORIES for c in value):
            value = ""  # zero-width spaces, a BOM, bidi overrides or tag characters alone show nothing
        if name == "prompt" and not value:
            raise ValueError("prompt must not be empty")
        bad = [c for c in value if unicodedata.category(c) in {"Cc", "Cs"} and c not in ALLOWED_CONTROL_CHARS]
        if bad:
            raise ValueError(f"{name} contains a control character {bad[0]!r}")
        limits, count_tokens = _context(info)
        if limits is not None and count_tokens is not None and value:
            tokens = count_tokens(value)
            if tokens is not None and tokens > limits.max_prompt_tokens:
                raise ValueError(token_limit_message(name, tokens, limits.max_prompt_tokens))
            if tokens is None and (most := most_tokens(value)) > limits.max_prompt_tokens:
                raise ValueError(
                    f"{name} is {most - UNCOUNTED_EXTRA_TOKENS} bytes long; until the model's tokenizer is known (no "
                    f"worker has started yet), the limit is {limits.max_prompt_tokens - UNCOUNTED_EXTRA_TOKENS} "
                    "bytes. Shorten it, or try again in a few minutes."
                )
        return value

    @field_validator("num_frames")
    @classmethod
    def _check_num_frames(cls, value: int, info: ValidationInfo) -> int:
        limits, _ = _context(info)
        if limits is not None and not 1 <= value <= limits.max_num_frames:
            raise ValueError(f"num_frames must be between 1 and {limits.max_num_frames}, got {value}")
        return value

    @field_validator("height", "width")
    @classmethod
    def _check_side(cls, value: int, info: ValidationInfo) -> int:
        name = info.field_name
        if value % SIDE_MULTIPLE_PX:
            raise ValueError(f"{name} must be a multiple of {SIDE_MULTIPLE_PX}, got {value}")
        limits, _ = _context(info)
        if limits is not None:
            maximum = limits.max_height_px if name == "height" else limits.max_width_px
            if not limits.min_side_px <= value <= maximum:
                raise ValueError(f"{name} must be between {limits.min_side_px} and {maximum}, got {value}")
        return value

    @field_validator("num_inference_steps")
    @classmethod
    def _check_steps(cls, value: int, info: ValidationInfo) -> int:
        limits, _ = _context(info)
        if limits is not None and not MIN_NUM_INFERENCE_STEPS <= value <= limits.max_num_inference_steps:
            raise ValueError(
                f"num_inference_steps must be between {MIN_NUM_INFERENCE_STEPS} and "
                f"{limits.max_num_inference_steps}, got {value}"
            )
        return value

    @field_validator("guidance_scale")
    @classmethod
    def _check_guidance(cls, value: float) -> float:
        if not 0 <= value <= 20:
            raise ValueError(f"guidance_scale must be between 0 and 20, got {value}")
        return value

    @field_validator("seed")
    @classmethod
    def _check_seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {value}")
        return value

    @field_validator("fps")
    @classmethod
    def _check_fps(cls, value: int, info: ValidationInfo) -> int:
        limits, _ = _context(info)
        if limits is not None and not 1 <= value <= limits.max_fps:
            raise ValueError(f"fps must be between 1 and {limits.max_fps}, got {value}")
        return value

    @model_validator(mode="after")
    def _check_work(self, info: ValidationInfo) -> GenerationRequest:
        """Refuse what no GPU could finish within the job time limit (each field is within its own bounds)."""
        limits, _ = _context(info)
        if limits is not None:
            work = WorkLimit(
                limits.gpu_tflops, limits.max_render_s, limits.max_num_frames, limits.max_num_inference_steps
            )
            refusal = work.refusal(
                self.rendered_num_frames, self.height, self.width, self.num_inference_steps, self.guidance_scale
            )
            if refusal is not None:
                raise ValueError(refusal)
        return self


def _context(info: ValidationInfo) -> tuple[Limits | None, CountTokens | None]:
    context = info.context or {}
    return context.get("limits"), context.get("count_tokens")


def _messages(exc: ValidationError) -> dict[str, str]:
    """One message per field, each naming the field and quoting the value."""
    messages: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) if error["loc"] else "request"
        if error["type"] == "value_error":
            message = str(error["ctx"]["error"])
        elif error["type"] == "missing":
            message = f"{field} is required"
        elif error["type"] == "extra_forbidden":
            message = f"{field or repr(field)} is not a known parameter"
        else:
            message = f"{field}: {error['msg'].lower()}, got {error['input']!r}"
        messages.setdefault(field, message)
    return messages
