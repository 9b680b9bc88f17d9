"""Predicts a request's GPU time from the work Mochi's transformer does, so no job can outlive its time limit."""

from __future__ import annotations

from dataclasses import dataclass

# Mochi 1's transformer (genmo/mochi-1-preview): ~10 B parameters in 48 blocks of width 3072, attending
# jointly over the video's latent patches and the prompt's 256 T5 tokens.
TRANSFORMER_PARAMS = 10e9
TRANSFORMER_LAYERS = 48
TRANSFORMER_WIDTH = 3072
TEXT_TOKENS = 256
FRAMES_PER_LATENT = 6  # the VAE's temporal compression
PIXELS_PER_TOKEN_SIDE = 16  # 8x spatial VAE compression times 2x2 patches
TERA = 1e12


def latent_frames(num_frames: int) -> int:
    """The latents a video of `num_frames` is denoised and decoded as: the first frame alone, then six to one."""
    return (num_frames - 1) // FRAMES_PER_LATENT + 1


def video_tokens(num_frames: int, height: int, width: int) -> int:
    """The transformer's sequence length for the video alone: latent frames times 2x2 latent patches."""
    return latent_frames(num_frames) * (height // PIXELS_PER_TOKEN_SIDE) * (width // PIXELS_PER_TOKEN_SIDE)


def render_flops(num_frames: int, height: int, width: int, num_inference_steps: int, guidance_scale: float) -> float:
    """Floating-point operations of the denoising loop: the matmuls (2 per parameter per token) plus
    attention (quadratic in the sequence), twice per step under classifier-free guidance."""
    tokens = video_tokens(num_frames, height, width) + TEXT_TOKENS
    passes = 2 if guidance_scale > 1.0 else 1  # MochiPipeline batches the unconditional pass when guidance > 1
    per_pass = 2 * TRANSFORMER_PARAMS * tokens + 4 * TRANSFORMER_LAYERS * TRANSFORMER_WIDTH * tokens**2
    return num_inference_steps * passes * per_pass


@dataclass(frozen=True, slots=True)
class WorkLimit:
    """At most `max_render_s` of denoising on a GPU that sustains `gpu_tflops`; suggestions stay within
    `max_num_frames` and `max_num_inference_steps`."""

    gpu_tflops: int
    max_render_s: int
    max_num_frames: int
    max_num_inference_steps: int

    def predicted_s(
        self, num_frames: int, height: int, width: int, num_inference_steps: int, guidance_scale: float
    ) -> float:
        return render_flops(num_frames, height, width, num_inference_steps, guidance_scale) / (self.gpu_tflops * TERA)

    def refusal(
        self, num_frames: int, height: int, width: int, num_inference_steps: int, guidance_scale: float
    ) -> str | None:
        """Why the request cannot finish in time, and what would; None when it fits."""
        needed_s = self.predicted_s(num_frames, height, width, num_inference_steps, guidance_scale)
        if needed_s <= self.max_render_s:
            return None
        options = []
        frames = self._most_frames(height, width, num_inference_steps, guidance_scale)
        if frames is not None:
            options.append(f"up to {frames} frames at {width}x{height} with {num_inference_steps} steps")
        steps = self._most_steps(num_frames, height, width, guidance_scale)
        if steps is not None:
            options.append(f"up to {steps} steps for {num_frames} frames at {width}x{height}")
        fits = " or ".join(options) if options else "a smaller size"
        return (
            f"this request needs about {_duration(needed_s)} of GPU time ({num_frames} frames at {width}x{height}, "
            f"{num_inference_steps} steps), but a job may run for at most {_duration(self.max_render_s)}: "
            f"try {fits}"
        )

    def _most_frames(self, height: int, width: int, steps: int, guidance_scale: float) -> int | None:
        best = None
        frames = FRAMES_PER_LATENT + 1
        while frames <= self.max_num_frames and self.predicted_s(frames, height, width, steps, guidance_scale) <= (
            self.max_render_s
        ):
            best = frames
            frames += FRAMES_PER_LATENT
        return best

    def _most_steps(self, num_frames: int, height: int, width: int, guidance_scale: float) -> int | None:
        per_step_s = self.predicted_s(num_frames, height, width, 1, guidance_scale)
        steps = min(int(self.max_render_s // per_step_s), self.max_num_inference_steps)
        return steps if steps >= 2 else None  # Mochi's scheduler needs 2 steps at least


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
