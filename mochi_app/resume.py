"""Steering a MochiPipeline call from a checkpoint: the schedule from a step on, and a decode in smaller tiles."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def starting_at(scheduler: Any, step: int) -> Iterator[None]:
    """While open, the pipeline's `set_timesteps` keeps only the schedule from `step` on.

    `MochiPipeline.__call__` always builds its linear-quadratic sigmas for the whole run and accepts no
    schedule of its own besides. So the full schedule is built as always, then both arrays are cut:
    FlowMatchEulerDiscreteScheduler.step reads `sigmas[i]` and `sigmas[i + 1]` from the begin index the
    pipeline sets (0), so step `i` of the cut run computes exactly what step `step + i` of a whole run
    does. `functools.wraps` keeps the signature, which diffusers inspects for `sigmas`.
    """
    build = scheduler.set_timesteps

    @functools.wraps(build)
    def set_timesteps(*args: Any, **kwargs: Any) -> None:
        build(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[step:]
        scheduler.sigmas = scheduler.sigmas[step:]

    scheduler.set_timesteps = set_timesteps
    try:
        yield
    finally:
        del scheduler.set_timesteps  # the instance attribute; the class's method shows again


TILE_SETTINGS = (
    "use_tiling",
    "tile_sample_min_height",
    "tile_sample_min_width",
    "tile_sample_stride_height",
    "tile_sample_stride_width",
)


@contextmanager
def smaller_tiles(vae: Any) -> Iterator[str]:
    """While open, the VAE decodes in tiles (half the size and stride of its current ones when it already
    tiles), which needs far less memory at once; yields how it decodes, for the log."""
    kept = {name: getattr(vae, name) for name in TILE_SETTINGS}
    if not vae.use_tiling:
        vae.enable_tiling()
    else:
        vae.enable_tiling(
            tile_sample_min_height=max(vae.tile_sample_min_height // 2, 64),
            tile_sample_min_width=max(vae.tile_sample_min_width // 2, 64),
            tile_sample_stride_height=max(vae.tile_sample_stride_height // 2, 48),
            tile_sample_stride_width=max(vae.tile_sample_stride_width // 2, 48),
        )
    try:
        yield f"in {vae.tile_sample_min_width}x{vae.tile_sample_min_height} tiles"
    finally:
        for name, value in kept.items():
            setattr(vae, name, value)
