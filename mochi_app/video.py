"""Frames to an H.264 MP4, written to a temporary name and renamed so no reader sees half a file."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.uint8]  # (frames, height, width, 3) RGB


class VideoNotWritten(OSError):
    """The MP4 could not be written (full disk, file-size limit, unwritable folder); nothing was left behind."""


# `{job_id}.mp4` (before each attempt had a file of its own) or `{job_id}.{attempt}.mp4`.
VIDEO_NAME = re.compile(r"(?P<job_id>[0-9a-f-]{36})(\.[0-9a-f]{12})?\.mp4")


def poster_of(video: str) -> str:
    """The name of a video's poster (posters.py), beside it: `{job_id}.{attempt}.webp` for `....mp4`."""
    return video.removesuffix(".mp4") + ".webp"


def attempt_video_path(videos_dir: Path, job_id: str) -> Path:
    """A fresh name for one attempt at a job's video. Each attempt writes its own file, so a stale worker
    (frozen past its heartbeat while another finished the job) can never overwrite or delete the video
    the record points at: it can only drop its own."""
    return videos_dir / f"{job_id}.{secrets.token_hex(6)}.mp4"


def job_videos(videos_dir: Path, job_id: str) -> list[Path]:
    """Every finished video file of a job's attempts in `videos_dir` (partial files are hidden, not listed)."""
    found = []
    for path in videos_dir.glob(f"{glob.escape(job_id)}.*"):
        match = VIDEO_NAME.fullmatch(path.name)
        if match is not None and match["job_id"] == job_id:
            found.append(path)
    return sorted(found)


def recorded_video(videos_dir: Path, job_id: str, recorded: str | None) -> Path | None:
    """The video file a record names (`video_path`, relative to the data folder), if it is one of this job's
    in `videos_dir`: a record changed by hand in Redis cannot point the web at any other file."""
    name = Path(recorded).name if recorded else f"{job_id}.mp4"
    match = VIDEO_NAME.fullmatch(name)
    if match is None or match["job_id"] != job_id or (recorded and Path(recorded).parent.name != videos_dir.name):
        return None
    return videos_dir / name


def write_mp4(frames: Frames, path: Path, fps: int, comment: str | None = None) -> None:
    """Encode `frames` at `fps` to `path` atomically, tagged with `comment`; on any error no file is left behind.

    Raises VideoNotWritten, quoting the reason, when the disk or the folder refuses the file.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 of shape (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    partial = path.with_name(f".{path.stem}.partial.mp4")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _encode(frames, partial, fps, comment)
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


def _encode(frames: Frames, path: Path, fps: int, comment: str | None) -> None:
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
        *(["-metadata", f"comment={comment}"] if comment is not None else []),
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
