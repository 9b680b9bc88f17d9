"""The quality presets the page offers, and the final render of a draft: the same seed and shape, the Final steps."""

from __future__ import annotations

from typing import Any

from mochi_app.config import Limits
from mochi_app.schemas import GenerationRequest

# name: (num_inference_steps, num_frames), clamped to the configured limits.
PRESETS = {"Draft": (24, 31), "Standard": (64, 85), "Final": (100, 163)}
FINAL = "Final"


def preset_shape(name: str, limits: Limits) -> tuple[int, int]:
    """The preset's steps and frames, held to the limits."""
    steps, frames = PRESETS[name]
    return min(steps, limits.max_num_inference_steps), min(frames, limits.max_num_frames)


def final_of(draft: GenerationRequest, limits: Limits) -> dict[str, Any]:
    """The parameters that render `draft` again with the Final preset's steps.

    The seed, size and frame count stay: the starting noise is drawn for the latents' shape, so the same
    shape and seed start from the same noise and keep the draft's motion and layout, where the Final
    preset's longer clip would start from other noise altogether.
    """
    steps, _ = preset_shape(FINAL, limits)
    return draft.model_dump() | {"num_frames": draft.rendered_num_frames, "num_inference_steps": steps}
