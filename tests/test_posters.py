"""A finished video's poster: small, the first frame first, a few frames spread over the video; and a job whose
poster cannot be kept still completes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from redis import Redis

from mochi_app.config import Settings
from mochi_app.errors import JobConflict
from mochi_app.posters import POSTER_FRAMES, POSTER_WIDTH_PX, poster_webp
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.runner import JobRunner
from mochi_app.storage import FolderStorage
from mochi_app.studio import Studio
from mochi_app.tokens import TokenCounter
from tests.harness import new_account
from tests.test_storage import TINY, StillRenderer


def numbered_frames(count: int, height: int, width: int) -> np.ndarray:
    """Frame n is a flat grey of level 8·n, so a poster's frame tells which video frame it came from."""
    levels = (np.arange(count) * 8).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def poster_frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as poster:
        assert poster.format == "WEBP"
        frames = []
        for index in range(getattr(poster, "n_frames", 1)):
            poster.seek(index)
            frames.append(np.asarray(poster.convert("RGB")))
        return frames


def test_a_poster_is_a_few_frames_spread_over_the_video_the_first_frame_first() -> None:
    frames = poster_frames(poster_webp(numbered_frames(31, 96, 160)))
    assert len(frames) == POSTER_FRAMES and frames[0].shape == (96, 160, 3)
    levels = [round(float(frame.mean()) / 8) for frame in frames]
    assert levels[0] == 0 and levels[-1] == 30 and levels == sorted(levels)


def test_a_wide_video_gets_a_poster_at_most_320_px_wide_in_its_own_aspect() -> None:
    with Image.open(io.BytesIO(poster_webp(numbered_frames(7, 480, 848)))) as poster:
        assert poster.size == (POSTER_WIDTH_PX, 181)  # 480 · 320 / 848, rounded


def test_a_video_of_one_frame_gets_a_still_poster() -> None:
    assert len(poster_frames(poster_webp(numbered_frames(1, 64, 64)))) == 1


@pytest.mark.parametrize(
    "frames",
    [np.zeros((0, 64, 64, 3), np.uint8), np.zeros((4, 64, 64), np.uint8), np.zeros((4, 64, 64, 3), np.float32)],
)
def test_frames_of_the_wrong_shape_or_type_are_refused_with_what_they_are(frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"frames must be uint8 of shape \(frames, height, width, 3\), got "):
        poster_webp(frames)


class NoRoomForPosters(FolderStorage):
    """A data folder that takes videos but refuses posters, as a full disk might."""

    def keep_poster(self, record: JobRecord, video: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")


def test_a_poster_that_cannot_be_kept_leaves_the_job_completed_without_a_thumbnail(
    settings: Settings, redis: Redis, count_tokens: TokenCounter
) -> None:
    queue = JobQueue(redis, settings, count_tokens)
    account = new_account()
    job = queue.submit(account, {"prompt": "a lighthouse at dusk", **TINY})
    queue.rq.remove(job.job_id)  # this test plays the worker itself
    videos = NoRoomForPosters(settings.data_dir, settings.videos_dir)
    JobRunner(queue, StillRenderer(), settings, videos, worker_id="w").run(job.job_id)

    record = queue.store.get(job.job_id)
    assert record is not None and (record.status, record.has_poster) == (JobStatus.COMPLETED, False)
    studio = Studio(redis, settings)  # the web process's own view of the same folder
    assert studio.video(account, job.job_id) is not None  # the video is whole
    assert studio.status(account, job.job_id).thumbnail_url is None  # the gallery shows a plain tile
    with pytest.raises(JobConflict, match="has no thumbnail"):
        studio.poster(account, job.job_id)
