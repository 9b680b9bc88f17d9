"""Frames to an H.264 MP4, written to a temporary name and renamed so no reader sees half a file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.uint8]  # (frames, height, width, 3) RGB


class VideoNotWritten(OSError):
    """The MP4 could not be written (full disk, file-size limit, unwritable folder); nothing was left behind."""


def video_path(videos_dir: Path, job_id: str) -> Path:
    return videos_dir / f"{job_id}.mp4"


def write_mp4(frames: Frames, path: Path, fps: int) -> None:
    """Encode `frames` at `fps` to `path` atomically; on any error no file is left behind.

    Raises VideoNotWritten, quoting the reason, when the disk or the folder refuses the file.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 of shape (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    partial = path.with_name(f".{path.stem}.partial.mp4")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _encode(frames, partial, fps)
        _fsync(partial)
        os.replace(partial, path)
        _fsync(path.parent)
    except OSError as exc:
        _discard(partial)
        if isinstance(exc, VideoNotWritten):
            raise
        raise VideoNotWritten(f"the video could not be written to {path.parent}: {exc.strerror or exc}") from exc
    except BaseException:
        _discard(partial)
        raise


def _discard(partial: Path) -> None:
    with contextlib.suppress(OSError):  # there may be no folder to remove it from
        partial.unlink(missing_ok=True)


def ffmpeg_exe() -> str:
    """imageio-ffmpeg's ffmpeg. Its first call runs `ffmpeg -version` in our process group and keeps the
    answer, a failure too: a worker asks at start, so a Ctrl-C in its terminal cannot fail a job's encode."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _encode(frames: Frames, path: Path, fps: int) -> None:
    """Pipe raw frames through ffmpeg. We run ffmpeg ourselves because imageio-ffmpeg's writer
    never checks its exit status: a full disk would have left a truncated MP4 that looks fine."""
    _, height, width, _ = frames.shape
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel", "error",
        "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
        "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",  # the index first, so a browser can play while it downloads
        str(path),
    ]  # fmt: skip
    # A group of its own: a Ctrl-C in the worker's terminal stops the worker gracefully, not this encode.
    frames_in = np.ascontiguousarray(frames).tobytes()
    result = subprocess.run(command, input=frames_in, capture_output=True, check=False, process_group=0)
    if result.returncode != 0:
        raise VideoNotWritten(f"the video could not be written to {path.parent}: {_ffmpeg_reason(result)}")


def _ffmpeg_reason(result: subprocess.CompletedProcess[bytes]) -> str:
    if result.returncode < 0:  # killed by a signal: SIGXFSZ when the file-size limit (ulimit -f) is reached
        return (signal.strsignal(-result.returncode) or f"signal {-result.returncode}").lower()
    lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"ffmpeg exited with status {result.returncode}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
