"""The cost model: a request's predicted GPU-seconds from its shape, fitted to what this model and device took.

Each phase of a job has features from the request's shape, and the phase's time is a non-negative linear
combination of them: the denoising a fixed part (text encoding and set-up) plus, per step and guidance pass,
terms in the video's tokens and their square (attention); the decode a fixed part plus one per latent
frame's pixels (the VAE decodes latents, six frames each) and one per frame pixel; the encode a fixed part
plus one per frame pixel; the rest (upload, record writes) a constant. Until a worker has timed enough jobs the
coefficients are the arithmetic's (work.py) scaled to the timings there are; then they are fitted to them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError, model_validator
from redis import Redis

from mochi_app.records import CostEstimate, JobRecord
from mochi_app.schemas import GenerationRequest
from mochi_app.work import (
    TERA,
    TEXT_TOKENS,
    TRANSFORMER_LAYERS,
    TRANSFORMER_PARAMS,
    TRANSFORMER_WIDTH,
    latent_frames,
    video_tokens,
)

Stored = TypeVar("Stored", bound=BaseModel)

MAX_SAMPLES = 256  # the newest timings kept per profile; older ones describe a slower past
MIN_SAMPLES_PER_TERM = 2  # a phase is fitted term by term once it has this many samples per term
MIN_SECONDS = 1e-3  # relative errors need a floor: an encode can take next to nothing


@dataclass(frozen=True, slots=True)
class Shape:
    """What a request's cost depends on."""

    step_passes: int  # denoising steps times guidance passes
    tokens: int  # the transformer's sequence: video tokens and the prompt's
    frame_pixels: int  # frames times pixels of the rendered video
    latent_pixels: int  # latent frames times pixels of the rendered video

    @classmethod
    def of(cls, request: GenerationRequest) -> Shape:
        frames = request.rendered_num_frames
        passes = 2 if request.guidance_scale > 1.0 else 1
        return cls(
            step_passes=request.num_inference_steps * passes,
            tokens=video_tokens(frames, request.height, request.width) + TEXT_TOKENS,
            frame_pixels=frames * request.height * request.width,
            latent_pixels=latent_frames(frames) * request.height * request.width,
        )


Features = Callable[[Shape], tuple[float, ...]]
PHASES: dict[str, Features] = {
    "denoise": lambda s: (1.0, s.step_passes, s.step_passes * s.tokens, s.step_passes * s.tokens**2),
    "decode": lambda s: (1.0, s.latent_pixels, s.frame_pixels),
    "encode": lambda s: (1.0, s.frame_pixels),
    "other": lambda s: (1.0,),
}
FEATURE_COUNTS = {name: len(features(Shape(1, 1, 1, 1))) for name, features in PHASES.items()}


class CostFit(BaseModel):
    """One profile's coefficients, phase by phase (the order of PHASES' features), and how many timings back them."""

    coefficients: dict[str, list[float]]
    samples: int = 0

    @model_validator(mode="after")
    def _one_per_feature(self) -> CostFit:
        counts = {name: len(coefficients) for name, coefficients in self.coefficients.items()}
        if counts != FEATURE_COUNTS:
            raise ValueError(f"coefficients per phase {counts} do not match the features {FEATURE_COUNTS}")
        return self

    def estimate(self, request: GenerationRequest) -> CostEstimate:
        shape = Shape.of(request)
        seconds = {name: _dot(self.coefficients[name], features(shape)) for name, features in PHASES.items()}
        fixed = self.coefficients["denoise"][0]
        return CostEstimate(
            text_encode_s=round(fixed, 3),
            denoise_s=round(seconds["denoise"] - fixed, 3),
            decode_s=round(seconds["decode"], 3),
            encode_s=round(seconds["encode"], 3),
            other_s=round(seconds["other"], 3),
        )


def arithmetic_prior(gpu_tflops: int) -> CostFit:
    """Mochi 1 on a GPU sustaining `gpu_tflops`: the transformer's FLOPs (work.render_flops), and a decode and
    encode at rates typical of an H100 (about 2.2 us per latent frame's pixel and 15 ns per frame pixel)."""
    flop_s = gpu_tflops * TERA
    return CostFit(
        coefficients={
            "denoise": [2.0, 0.0, 2 * TRANSFORMER_PARAMS / flop_s, 4 * TRANSFORMER_LAYERS * TRANSFORMER_WIDTH / flop_s],
            "decode": [1.0, 2.2e-6, 0.0],
            "encode": [0.1, 1.5e-8],
            "other": [0.1],
        }
    )


# The tiny random-weight model on a CPU, as measured on a 2-core build machine: a stand-in until the
# worker's own timings arrive.
TINY_PRIOR = CostFit(
    coefficients={
        "denoise": [0.02, 0.004, 0.0, 6e-9],
        "decode": [0.035, 1e-5, 0.0],
        "encode": [0.03, 2.2e-7],
        "other": [0.008],
    }
)


class Sample(BaseModel):
    """One completed job's shape and the seconds each phase took."""

    step_passes: int
    tokens: int
    frame_pixels: int
    latent_pixels: int
    seconds: dict[str, float]

    @classmethod
    def of(cls, record: JobRecord) -> Sample | None:
        """The record's timings, if they describe one whole run (not resumed, no decode retried)."""
        timings = record.timings
        if (
            record.started_at is None
            or record.finished_at is None
            or record.resumed_from_step is not None
            or record.decode_retries
            or timings.denoise_s is None
            or timings.decode_s is None
            or timings.encode_s is None
        ):
            return None
        run_s = record.finished_at - record.started_at
        phases = {"denoise": timings.denoise_s, "decode": timings.decode_s, "encode": timings.encode_s}
        shape = Shape.of(record.request)
        return cls(
            **asdict(shape),
            seconds=phases | {"other": max(0.0, run_s - sum(phases.values()))},
        )

    @property
    def shape(self) -> Shape:
        return Shape(self.step_passes, self.tokens, self.frame_pixels, self.latent_pixels)


def fit(samples: Sequence[Sample], prior: CostFit) -> CostFit:
    """Coefficients that minimise each phase's relative error over `samples`, none negative.

    A phase with fewer than MIN_SAMPLES_PER_TERM samples per term, or whose shapes cannot tell its
    terms apart, keeps the prior's coefficients scaled by the median ratio of its timings to the prior.
    """
    coefficients = {
        name: _fit_phase(
            [features(sample.shape) for sample in samples],
            [sample.seconds[name] for sample in samples],
            prior.coefficients[name],
        )
        for name, features in PHASES.items()
    }
    return CostFit(coefficients=coefficients, samples=len(samples))


def _fit_phase(rows: list[tuple[float, ...]], seconds: list[float], prior: list[float]) -> list[float]:
    if not rows:
        return list(prior)
    x = np.asarray(rows, dtype=np.float64)
    y = np.maximum(np.asarray(seconds, dtype=np.float64), MIN_SECONDS)
    if len(rows) >= MIN_SAMPLES_PER_TERM * x.shape[1] and np.linalg.matrix_rank(x / x.max(axis=0)) == x.shape[1]:
        fitted = _non_negative_relative_lstsq(x, y)
        if fitted is not None:
            return fitted
    predicted = x @ np.asarray(prior)
    scale = statistics.median(float(v) for v in y / np.maximum(predicted, MIN_SECONDS))
    return [float(c) * scale for c in prior]


def _non_negative_relative_lstsq(x: np.ndarray, y: np.ndarray) -> list[float] | None:
    """Least squares on (x.c - y) / y with c >= 0: a negative coefficient's term is dropped and the rest refitted."""
    weighted = x / y[:, None]
    scale = np.maximum(np.abs(weighted).max(axis=0), 1e-300)  # columns differ by many orders of magnitude
    kept = list(range(x.shape[1]))
    while kept:
        solution, *_ = np.linalg.lstsq(weighted[:, kept] / scale[kept], np.ones(len(y)), rcond=None)
        if (solution >= 0).all():
            full = [0.0] * x.shape[1]
            for index, value in zip(kept, solution / scale[kept], strict=True):
                full[index] = float(value)
            return full if (x @ np.asarray(full) > 0).all() else None
        kept = [index for index, value in zip(kept, solution, strict=True) if value >= 0]
    return None


def _dot(coefficients: Sequence[float], features: tuple[float, ...]) -> float:
    return max(0.0, sum(c * f for c, f in zip(coefficients, features, strict=True)))


def profile_name(model: str, made_with: Mapping[str, Any]) -> str:
    """Which timings a worker's jobs calibrate: one model on one kind of device (from the renderer's
    `made_with`, whose `device` is the GPU's name or the CPU's architecture)."""
    return f"{model}@{made_with.get('device') or 'unknown'}"


def samples_key(queue_name: str, profile: str) -> str:
    return f"costs:{queue_name}:{profile}:samples"


def fit_key(queue_name: str, profile: str) -> str:
    return f"costs:{queue_name}:{profile}"


class CostModels:
    """The fitted profiles of one queue in Redis: workers add their timings, the web reads the fits."""

    def __init__(self, redis: Redis, queue_name: str, gpu_tflops: int) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.real_prior = arithmetic_prior(gpu_tflops)

    def prior(self, is_tiny: bool) -> CostFit:
        return TINY_PRIOR if is_tiny else self.real_prior

    def observe(self, record: JobRecord, profile: str, is_tiny: bool) -> CostFit | None:
        """Add a completed job's timings to `profile` and refit it; None when the record holds no whole run."""
        sample = Sample.of(record)
        if sample is None:
            return None
        key = samples_key(self.queue_name, profile)
        with self.redis.pipeline() as pipe:
            pipe.lpush(key, sample.model_dump_json())
            pipe.ltrim(key, 0, MAX_SAMPLES - 1)
            pipe.lrange(key, 0, -1)
            *_, raws = pipe.execute()
        fitted = fit([sample for raw in raws if (sample := _parsed(Sample, raw))], self.prior(is_tiny))
        self.redis.set(fit_key(self.queue_name, profile), fitted.model_dump_json())
        return fitted

    def current(self, profile: str | None, is_tiny: bool) -> CostFit:
        """The profile's fit, or the prior until it has one (or while the one stored is of another layout)."""
        raw = self.redis.get(fit_key(self.queue_name, profile)) if profile else None
        return (_parsed(CostFit, raw) if raw else None) or self.prior(is_tiny)


def _parsed(model: type[Stored], raw: bytes | str) -> Stored | None:
    """`raw` as `model`; None when an older layout wrote it (a feature since added), which is skipped, not fatal."""
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None
