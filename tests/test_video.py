"""write_mp4: H.264 at the asked fps, all frames, and never half a file."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from mochi_app.video import VideoNotWritten, attempt_video_path, job_videos, recorded_video, write_mp4

JOB_ID = "0b9d7c4e-3f2a-4c1b-9e8d-7a6b5c4d3e2f"


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    ramp = np.linspace(0, 255, count, dtype=np.uint8)
    return np.broadcast_to(ramp[:, None, None, None], (count, height, width, 3)).copy()


def test_writes_a_readable_h264_mp4(tmp_path: Path) -> None:
    path = attempt_video_path(tmp_path / "videos", JOB_ID)
    write_mp4(gradient_frames(13, 96, 160), path, fps=30)
    reader = imageio.get_reader(path, "ffmpeg")
    meta = reader.get_meta_data()
    assert (reader.count_frames(), meta["size"], meta["fps"], meta["codec"]) == (13, (160, 96), 30.0, "h264")
    first, last = reader.get_data(0), reader.get_data(12)
    assert abs(int(first.mean()) - 0) <= 3 and abs(int(last.mean()) - 255) <= 3
    assert os.listdir(tmp_path / "videos") == [path.name]


def test_a_failed_encode_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames must be uint8"):
        write_mp4(np.zeros((3, 16, 16, 3), dtype=np.float32), tmp_path / "x.mp4", fps=30)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@contextmanager
def file_size_limit(limit_bytes: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process and the ffmpeg it starts, as `ulimit -f` would set it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_file_size_limit_is_an_error_that_says_so_and_leaves_no_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (31, 96, 160, 3), dtype=np.uint8)
    with file_size_limit(16 * 1024), pytest.raises(VideoNotWritten) as caught:
        write_mp4(noise, tmp_path / "clip.mp4", fps=30)
    assert str(caught.value) == f"the video could not be written to {tmp_path}: file size limit exceeded"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_an_error_that_says_so(tmp_path: Path) -> None:
    (tmp_path / "videos").write_text("a file where the folder should be")
    with pytest.raises(VideoNotWritten, match=r"the video could not be written to .*/videos: File exists"):
        write_mp4(gradient_frames(7, 64, 64), tmp_path / "videos" / "clip.mp4", fps=30)


def test_each_attempt_writes_a_file_of_its_own_and_only_a_jobs_own_files_are_named(tmp_path: Path) -> None:
    first, second = attempt_video_path(tmp_path, JOB_ID), attempt_video_path(tmp_path, JOB_ID)
    assert first != second and first.name.startswith(f"{JOB_ID}.")
    for path in (first, second, tmp_path / f"{JOB_ID}.mp4"):
        path.write_bytes(b"mp4")
    other = "1b9d7c4e-3f2a-4c1b-9e8d-7a6b5c4d3e2f"
    (tmp_path / f"{other}.mp4").write_bytes(b"someone else's")
    (tmp_path / f".{first.stem}.partial.mp4").write_bytes(b"half")
    assert job_videos(tmp_path, JOB_ID) == sorted([first, second, tmp_path / f"{JOB_ID}.mp4"])
    videos = tmp_path / "videos"
    assert recorded_video(videos, JOB_ID, f"videos/{first.name}") == videos / first.name
    assert recorded_video(videos, JOB_ID, None) == videos / f"{JOB_ID}.mp4"  # records from before attempts
    for forged in (f"videos/{other}.mp4", "videos/../../etc/passwd", "/etc/passwd", f"elsewhere/{first.name}"):
        assert recorded_video(videos, JOB_ID, forged) is None, forged
