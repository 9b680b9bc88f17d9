"""Studio: what the web offers an account, on a real Valkey (no worker needed)."""

from __future__ import annotations

import uuid

import pytest
from redis import Redis

from mochi_app.config import Settings
from mochi_app.errors import JobConflict, JobNotFound
from mochi_app.public import download_path
from mochi_app.records import JobStatus
from mochi_app.schemas import InvalidRequest
from mochi_app.served_model import publish_served_model
from mochi_app.studio import Studio
from mochi_app.tiny_model import build_tiny_tokenizer
from mochi_app.video import attempt_video_path
from tests.harness import SMALL, new_account


@pytest.fixture
def studio(redis: Redis, settings: Settings) -> Studio:
    return Studio(redis, settings)


def test_a_submitted_job_is_pending_with_its_place_in_the_queue(studio: Studio) -> None:
    owner = new_account()
    first = studio.submit(owner, {"prompt": "a cat", **SMALL})
    second = studio.submit(owner, {"prompt": "a dog", **SMALL, "num_frames": 30, "fps": 10})
    assert (first.status, first.queue_position, second.queue_position) == (JobStatus.PENDING, 0, 1)
    assert (second.num_frames, second.duration_s) == (31, 3.1)
    assert second.download_url is None and second.eta_s is None
    assert studio.status(owner, second.job_id) == second


def test_another_accounts_job_looks_exactly_like_a_missing_one(studio: Studio) -> None:
    job = studio.submit(new_account(), {"prompt": "mine", **SMALL})
    with pytest.raises(JobNotFound) as theirs:
        studio.status(new_account(), job.job_id)
    missing_id = str(uuid.uuid4())
    with pytest.raises(JobNotFound) as missing:
        studio.status(new_account(), missing_id)
    assert str(theirs.value) == f"no job with id {job.job_id!r}"
    assert str(missing.value) == f"no job with id {missing_id!r}"
    for action in (studio.video, studio.cancel, studio.delete):
        with pytest.raises(JobNotFound):
            action(new_account(), job.job_id)


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "%2e%2e", "x" * 10_000, ""])
def test_a_crafted_job_id_is_not_found(studio: Studio, job_id: str) -> None:
    with pytest.raises(JobNotFound):
        studio.status(new_account(), job_id)


def test_the_gallery_pages_newest_first(studio: Studio) -> None:
    owner = new_account()
    ids = [studio.submit(owner, {"prompt": f"clip {n}", **SMALL}).job_id for n in range(5)]
    first = studio.jobs(owner, limit=2)
    second = studio.jobs(owner, limit=2, cursor=first.next_cursor)
    last = studio.jobs(owner, limit=2, cursor=second.next_cursor)
    assert [job.job_id for job in [*first.jobs, *second.jobs, *last.jobs]] == ids[::-1]
    assert last.next_cursor is None
    assert studio.jobs(new_account()).jobs == []
    with pytest.raises(InvalidRequest, match="limit must be between 1 and 100, got 0"):
        studio.jobs(owner, limit=0)


def test_cancel_then_delete_removes_record_index_and_file(studio: Studio, settings: Settings) -> None:
    owner = new_account()
    job = studio.submit(owner, {"prompt": "short-lived", **SMALL})
    with pytest.raises(JobConflict, match="is PENDING; its video can be downloaded once it is COMPLETED"):
        studio.video(owner, job.job_id)
    with pytest.raises(JobConflict, match="is PENDING; cancel it before deleting it"):
        studio.delete(owner, job.job_id)
    assert studio.cancel(owner, job.job_id).status is JobStatus.CANCELLED
    with pytest.raises(JobConflict, match="is already CANCELLED"):
        studio.cancel(owner, job.job_id)
    stray = attempt_video_path(settings.videos_dir, job.job_id)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not really a video")
    studio.delete(owner, job.job_id)
    assert not stray.exists()
    assert studio.jobs(owner).jobs == []
    with pytest.raises(JobNotFound):
        studio.status(owner, job.job_id)


def test_download_path_is_relative_to_the_app_root() -> None:
    assert download_path("abc") == "/download/abc"


def test_prompts_are_counted_with_the_tokenizer_the_workers_published(studio: Studio, settings: Settings) -> None:
    assert studio.model() is None
    assert studio.models.count_tokens("a cat") is None
    owner = new_account()
    long_prompt = " ".join(["cat"] * 300)
    # Not countable yet: held to the byte bound no tokenizer exceeds (schemas.most_tokens).
    with pytest.raises(InvalidRequest, match="until the model's tokenizer is known"):
        studio.submit(owner, {"prompt": long_prompt, **SMALL})
    studio.submit(owner, {"prompt": " ".join(["cat"] * 60), **SMALL})  # 239 bytes

    tokenizer = build_tiny_tokenizer()
    publish_served_model(studio.redis, settings.queue_name, "tiny", True, tokenizer.to_str())
    assert studio.model() is not None and studio.model().is_tiny  # type: ignore[union-attr]
    assert studio.models.count_tokens("a cat") == len(tokenizer.encode("a cat").ids)
    with pytest.raises(InvalidRequest, match="prompt is 301 tokens long; the limit is 256"):
        studio.submit(owner, {"prompt": long_prompt, **SMALL})


def test_health_says_degraded_without_workers(studio: Studio) -> None:
    health = studio.health()
    assert (health.status, health.redis, health.live_workers) == ("degraded", True, 0)
