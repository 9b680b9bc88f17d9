"""Frames to an H.264 MP4, written to a temporary name and renamed so no reader sees half a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.uint8]  # (frames, height, width, 3) RGB


def video_path(videos_dir: Path, job_id: str) -> Path:
    return videos_dir / f"{job_id}.mp4"


def write_mp4(frames: Frames, path: Path, fps: int) -> None:
    """Encode `frames` at `fps` to `path` atomically; on any error no file is left behind."""
    import imageio_ffmpeg

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 of shape (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.mp4")
    try:
        writer = imageio_ffmpeg.write_frames(
            str(partial),
            size=(width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,  # sizes are multiples of 16 already; never let ffmpeg rescale
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        _fsync(partial)
        os.replace(partial, path)
        _fsync(path.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
