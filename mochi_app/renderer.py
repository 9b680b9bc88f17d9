"""MochiRenderer: a loaded Mochi pipeline renders one request, timing its phases; out of memory is explained."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mochi_app.checkpoints import Checkpoint
from mochi_app.fast_path import FastPath, text_lengths, uncompile_blocks
from mochi_app.resume import smaller_tiles, starting_at
from mochi_app.schemas import GenerationRequest, token_limit_message
from mochi_app.stages import DownloadProgress, Stage, StageReport
from mochi_app.video import Frames

log = logging.getLogger(__name__)

TINY = "tiny"
# cuBLAS and cuDNN report a failed allocation as a RuntimeError, not torch.OutOfMemoryError.
OUT_OF_MEMORY_MESSAGE = re.compile(r"out of memory|ALLOC_FAILED|NOT_ENOUGH_WORKSPACE", re.IGNORECASE)
# The warm-up render: on CUDA at the size jobs use (848x480), so that compiling and kernel tuning happen
# at production shapes; on a CPU small, where it only pays the first-call costs.
CUDA_WARM_UP = {"num_frames": 7, "height": 480, "width": 848, "num_inference_steps": 2}
CPU_WARM_UP = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}

StepCallback = Callable[[int, int], None]


class PromptTooLong(ValueError):
    """The pipeline would have to truncate the prompt."""


class OutOfMemory(RuntimeError):
    """The render did not fit in the device's memory; the message says what to try instead."""


class DecodeFailed(Exception):
    """The denoising finished but the VAE decode failed (its cause is `__cause__`); `denoised` holds the
    final latents, so only the decode need run again."""

    def __init__(self, denoised: Checkpoint, denoise_s: float) -> None:
        super().__init__(f"the decode failed after {denoised.step} steps")
        self.denoised = denoised
        self.denoise_s = denoise_s


@dataclass(frozen=True, slots=True)
class Checkpointing:
    """Where a render starts (a checkpoint, or None for step 0), and what it hands out of its latents as it
    goes: all of them to `save` every `every_steps` steps and after the last, and the middle latent frame
    (float32 on the CPU, shape (12, height / 8, width / 8)) to `preview` every `preview_every_steps` steps
    before the last (0: never)."""

    start: Checkpoint | None = None
    every_steps: int = 0
    save: Callable[[Checkpoint], None] = lambda checkpoint: None
    preview_every_steps: int = 0
    preview: Callable[[int, np.ndarray], None] = lambda step, latent_frame: None


NO_CHECKPOINTS = Checkpointing()


@dataclass(frozen=True, slots=True)
class Rendering:
    frames: Frames
    denoise_s: float
    decode_s: float
    peak_gpu_memory_bytes: int | None = None  # the most CUDA memory the render held; None off CUDA
    resumed_from_step: int | None = None  # the checkpoint's step it went on from; None: from the start
    decode_retries: int = 0  # decodes tried again on the same latents after one failed


def out_of_memory_advice(request: GenerationRequest, device: str) -> str:
    where = "GPU memory" if device.startswith("cuda") else "memory"
    return (
        f"out of {where} rendering {request.rendered_num_frames} frames at {request.width}x{request.height}: "
        "try fewer frames or a smaller size, or run the worker with MOCHI_OFFLOAD=model (or sequential)"
    )


def warm_up_shape(device: str, is_tiny: bool) -> dict[str, int]:
    """The real model on CUDA warms up at the size jobs use; anything else small."""
    return CUDA_WARM_UP if device.startswith("cuda") and not is_tiny else CPU_WARM_UP


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and OUT_OF_MEMORY_MESSAGE.search(str(exc)) is not None
    )


def log_stage(stage: Stage, detail: str | None = None, download: DownloadProgress | None = None) -> None:
    """A StageReport that only logs, where nobody else listens."""
    log.info("%s%s%s", stage, f": {detail}" if detail else "", f" ({download.describe()})" if download else "")


class MochiRenderer:
    """A loaded `MochiPipeline`, kept for the life of the process."""

    def __init__(self, pipe: Any, model_name: str, fast_path: FastPath | None = None) -> None:
        pipe.set_progress_bar_config(disable=True)  # progress goes to the job record instead
        self.pipe = pipe
        self.model_name = model_name
        self.fast_path = fast_path or FastPath()

    @property
    def is_tiny(self) -> bool:
        return self.model_name == TINY

    def count_tokens(self, text: str) -> int:
        return len(self.pipe.tokenizer(text).input_ids)

    def tokenizer_json(self) -> str:
        """The tokenizer as the pipeline really runs it, for counting tokens without torch."""
        return str(self.pipe.tokenizer.backend_tokenizer.to_str())

    def render(
        self, request: GenerationRequest, on_step: StepCallback, checkpointing: Checkpointing = NO_CHECKPOINTS
    ) -> Rendering:
        """Render `request`; `on_step(step, total)` runs after every denoising step and may raise to stop.

        With `checkpointing.start`, the denoising goes on from that checkpoint's latents and step.
        """
        # 1. Refuse what the pipeline would silently truncate.
        self._check_prompt_length(request)

        # 2. Denoise from the start or the checkpoint, and decode.
        try:
            return self._run(request, on_step, checkpointing)
        except DecodeFailed as failed:
            cause = failed.__cause__
            # 3. A failed decode is tried once more on the same latents, in smaller tiles: no step runs again.
            with smaller_tiles(self.pipe.vae) as how:
                log.warning(
                    "the decode failed (%s: %s); decoding the same latents again %s", type(cause).__name__, cause, how
                )
                again = self._run(request, on_step, Checkpointing(start=failed.denoised), retrying_decode=True)
            started = checkpointing.start.step if checkpointing.start is not None else None
            return replace(again, denoise_s=failed.denoise_s, resumed_from_step=started, decode_retries=1)

    def _run(
        self,
        request: GenerationRequest,
        on_step: StepCallback,
        checkpointing: Checkpointing,
        retrying_decode: bool = False,
    ) -> Rendering:
        import torch

        total = request.num_inference_steps
        start = checkpointing.start
        first_step = start.step if start is not None else 0
        every = checkpointing.every_steps
        preview_every = checkpointing.preview_every_steps
        last_step_at = time.perf_counter()
        denoised: Checkpoint | None = start if start is not None and start.step == total else None

        device = self.device
        on_cuda = device.startswith("cuda")

        def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal last_step_at, denoised
            step = first_step + index + 1
            if on_cuda and step == total:
                torch.cuda.synchronize(device)  # kernels run ahead of Python: denoising ends when they do
            last_step_at = time.perf_counter()
            latents = tensors["latents"]
            if every and (step % every == 0 or step == total):
                checkpointing.save(Checkpoint(step, latents.detach().to("cpu", copy=True)))
            if preview_every and step % preview_every == 0 and step < total:
                middle = latents[0, :, latents.shape[2] // 2]  # (batch, channels, frames, height, width)
                checkpointing.preview(step, middle.detach().float().cpu().numpy())
            on_step(step, total)
            if step == total:  # after on_step: a cancel at the last step is no decode failure
                denoised = Checkpoint(step, latents)
            return {}

        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        started_at = time.perf_counter()
        failure: Exception | None = None
        try:
            with (
                torch.inference_mode(),
                text_lengths(self.pipe, self.text_lengths(request)),
                starting_at(self.pipe.scheduler, first_step),
            ):
                output = self.pipe(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    num_frames=request.rendered_num_frames,
                    height=request.height,
                    width=request.width,
                    num_inference_steps=total,
                    guidance_scale=request.guidance_scale,
                    # A CPU generator gives the same noise for a seed on every device.
                    generator=torch.Generator("cpu").manual_seed(request.seed or 0),
                    latents=start.latents if start is not None else None,
                    output_type="np",
                    callback_on_step_end=step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                    max_sequence_length=self.max_sequence_length,
                )
        except Exception as exc:
            if denoised is not None and not retrying_decode and isinstance(exc, RuntimeError):
                failure = DecodeFailed(denoised, denoise_s=last_step_at - started_at)
                failure.__cause__ = exc
            elif is_out_of_memory(exc):
                failure = OutOfMemory(out_of_memory_advice(request, device))
            else:
                raise  # the job runner releases the memory once it has recorded the failure
        if failure is not None:
            # Out here, not in the except clause: the traceback (and every tensor its frames hold) is
            # gone, so the memory can really be given back before the next try or job.
            self.release_memory()
            raise failure
        finished_at = time.perf_counter()
        peak_gpu_memory_bytes = int(torch.cuda.max_memory_allocated(device)) if on_cuda else None

        # 3. Floats in [0, 1] to 8-bit RGB frames.
        frames = np.clip(np.rint(output.frames[0] * 255.0), 0, 255).astype(np.uint8)
        return Rendering(
            frames=frames,
            denoise_s=last_step_at - started_at,
            decode_s=finished_at - last_step_at,
            peak_gpu_memory_bytes=peak_gpu_memory_bytes,
            resumed_from_step=start.step if start is not None else None,
        )

    @functools.cached_property
    def made_with(self) -> dict[str, Any]:
        """What an MP4 records of how it was made here: the model and its snapshot, versions, dtype, device
        and the fast path in effect (provenance.provenance)."""
        import platform
        from dataclasses import asdict
        from importlib.metadata import version
        from pathlib import Path

        import torch

        folder = Path(str(self.pipe.name_or_path))
        device = self.device
        return {
            "model": {"id": self.model_name, "revision": folder.name if folder.parent.name == "snapshots" else None},
            "versions": {name: version(name) for name in ("diffusers", "torch", "transformers")},
            "dtype": str(self.pipe.transformer.dtype).removeprefix("torch."),
            "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.machine(),
            "fast_path": asdict(self.fast_path),
        }

    @property
    def device(self) -> str:
        return str(self.pipe._execution_device)

    @staticmethod
    def release_memory() -> None:
        """Hand cached GPU blocks back so the next job starts with the whole device."""
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def warm_up(self, report: StageReport | None = None) -> float:
        """Render one short clip so the first job pays no first-call costs (compiling included); returns seconds."""
        started_at = time.perf_counter()
        shape = warm_up_shape(self.device, self.is_tiny)
        request = GenerationRequest.model_validate({"prompt": "warm up", "seed": 0, **shape})
        compiling = ", compiling the transformer blocks" if self.fast_path.compile_blocks else ""
        (report or log_stage)(Stage.WARMING_UP, f"a first {request.width}x{request.height} render{compiling}")
        try:
            self.render(request, on_step=lambda step, total: None)
        except OutOfMemory:
            raise
        except Exception as exc:
            if not self.fast_path.compile_blocks:
                raise
            # A compiler that fails here would fail every job: serve them uncompiled instead.
            log.error("compiling the transformer blocks failed (%s: %s); rendering without it", type(exc).__name__, exc)
            uncompile_blocks(self.pipe)
            self.fast_path = replace(self.fast_path, compile_blocks=False)
            self.render(request, on_step=lambda step, total: None)
        return time.perf_counter() - started_at

    def text_lengths(self, request: GenerationRequest) -> list[int]:
        """Each prompt's real tokens as the pipeline's attention mask will count them, in its batch order: the
        negative prompt first, and only under guidance (`MochiPipeline.do_classifier_free_guidance`)."""
        prompts = [request.negative_prompt, request.prompt] if request.guidance_scale > 1 else [request.prompt]
        return [self._mask_length(text) for text in prompts]

    def _mask_length(self, text: str) -> int:
        if not text and self.pipe.config.force_zeros_for_empty_prompt:
            return 0  # the pipeline zeroes an empty prompt's mask, as Mochi's original code does
        mask = self.pipe.tokenizer(text, max_length=self.max_sequence_length, truncation=True).attention_mask
        return int(sum(mask))

    @property
    def max_sequence_length(self) -> int:
        return int(self.pipe.transformer.config.max_sequence_length)

    def _check_prompt_length(self, request: GenerationRequest) -> None:
        limit = self.max_sequence_length
        for name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            tokens = self.count_tokens(text)
            if tokens > limit:
                raise PromptTooLong(token_limit_message(name, tokens, limit))
