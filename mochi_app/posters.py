"""A finished video's poster: a few of its frames, small, as one animated WebP for the gallery's tiles."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mochi_app.video import Frames

POSTER_WIDTH_PX = 320
POSTER_FRAMES = 8
POSTER_LOOP_S = 2.0  # the few frames loop in about this long, whatever the video's length
POSTER_QUALITY = 60  # WebP's lossy scale, 0-100: a thumbnail, not the video


def poster_webp(frames: Frames) -> bytes:
    """`POSTER_FRAMES` frames spread over the video, the first frame first (what a browser shows before it
    animates, and where animation is off), at most `POSTER_WIDTH_PX` wide."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 of shape (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    picked = np.unique(np.linspace(0, count - 1, min(POSTER_FRAMES, count)).round().astype(int))
    size = (min(width, POSTER_WIDTH_PX), max(1, round(height * min(width, POSTER_WIDTH_PX) / width)))
    images = [Image.fromarray(frames[index]).resize(size, Image.Resampling.BILINEAR) for index in picked]
    out = io.BytesIO()
    images[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=round(POSTER_LOOP_S * 1000 / len(images)),
        loop=0,
        quality=POSTER_QUALITY,
    )
    return out.getvalue()
