"""JobQueue: validate, record and enqueue atomically; JSON only; cancel and position."""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import replace

import pytest
from redis import Redis

from mochi_app.config import Settings
from mochi_app.queue import JobQueue, TooBusy
from mochi_app.records import JobStatus
from mochi_app.schemas import InvalidRequest
from tests.harness import SMALL, new_account


def test_submit_records_a_pending_job_and_enqueues_it(job_queue: JobQueue, redis: Redis) -> None:
    owner = new_account()
    record = job_queue.submit(owner, {"prompt": "a cat", **SMALL, "num_frames": 30})
    assert str(uuid.UUID(record.job_id)) == record.job_id
    assert record.status is JobStatus.PENDING
    assert (record.request.num_frames, record.num_frames) == (30, 31)
    assert record.request.seed is not None
    assert record.progress.step == 0 and record.progress.total == 4
    assert job_queue.store.get(record.job_id) == record
    assert job_queue.rq.job_ids == [record.job_id]
    assert [r.job_id for r in job_queue.store.list_for_account(owner).records] == [record.job_id]


def test_rq_job_carries_json_only_and_an_explicit_timeout(job_queue: JobQueue, redis: Redis) -> None:
    record = job_queue.submit(new_account(), {"prompt": "a cat", **SMALL})
    stored = redis.hgetall(f"rq:job:{record.job_id}")
    # RQ zlib-compresses the serialized call; underneath it must be plain JSON, never a pickle.
    assert json.loads(zlib.decompress(stored[b"data"])) == ["mochi_app.tasks.render", None, [record.job_id], {}]
    assert int(stored[b"timeout"]) == job_queue.settings.job_timeout_s


@pytest.mark.parametrize(
    "params",
    [
        {"prompt": " "},
        {"prompt": "a cat", "height": 850},
        {"prompt": "a cat", "guidance_scale": float("nan")},
        {"prompt": "a cat", "bogus": 1},
        {"prompt": "cat " * 400},
    ],
)
def test_a_bad_request_enqueues_nothing(job_queue: JobQueue, redis: Redis, params: dict[str, object]) -> None:
    before = set(redis.scan_iter("job:*"))
    with pytest.raises(InvalidRequest):
        job_queue.submit(new_account(), params)
    assert job_queue.depth() == 0
    assert set(redis.scan_iter("job:*")) == before


def test_position_counts_the_jobs_ahead(job_queue: JobQueue) -> None:
    records = [job_queue.submit(new_account(), {"prompt": "a cat", **SMALL}) for _ in range(3)]
    assert [job_queue.position(r.job_id) for r in records] == [0, 1, 2]
    job_queue.cancel(records[0].job_id)
    assert job_queue.position(records[0].job_id) is None
    assert job_queue.position(records[2].job_id) == 1


def test_cancelling_a_pending_job_ends_it_and_takes_it_off_the_queue(job_queue: JobQueue) -> None:
    record = job_queue.submit(new_account(), {"prompt": "a cat", **SMALL})
    cancelled = job_queue.cancel(record.job_id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert job_queue.depth() == 0


def test_cancelling_twice_or_an_unknown_job(job_queue: JobQueue) -> None:
    record = job_queue.submit(new_account(), {"prompt": "a cat", **SMALL})
    first = job_queue.cancel(record.job_id)
    assert job_queue.cancel(record.job_id) == first
    assert job_queue.cancel(str(uuid.uuid4())) is None


def test_a_new_account_goes_ahead_of_a_long_backlog(job_queue: JobQueue) -> None:
    heavy, light, other = new_account(), new_account(), new_account()
    backlog = [job_queue.submit(heavy, {"prompt": f"clip {n}", **SMALL}).job_id for n in range(4)]
    first = job_queue.submit(light, {"prompt": "mine", **SMALL}).job_id
    second = job_queue.submit(light, {"prompt": "mine too", **SMALL}).job_id
    third = job_queue.submit(other, {"prompt": "and mine", **SMALL}).job_id
    assert job_queue.rq.job_ids == [backlog[0], first, third, backlog[1], second, backlog[2], backlog[3]]
    assert job_queue.position(first) == 1


def test_too_many_waiting_jobs_is_refused_with_the_count(redis: Redis, settings: Settings) -> None:
    queue = JobQueue(redis, replace(settings, max_pending_jobs=2), count_tokens=None)
    owner = new_account()
    for _ in range(2):
        queue.submit(owner, {"prompt": "a cat", **SMALL})
    with pytest.raises(TooBusy, match="you have 2 jobs waiting; the limit is 2 per account") as refused:
        queue.submit(owner, {"prompt": "one more", **SMALL})
    assert refused.value.retry_after_s > 0
    assert queue.rq.count == 2
    queue.submit(new_account(), {"prompt": "someone else", **SMALL})


def test_submits_per_minute_are_capped(redis: Redis, settings: Settings) -> None:
    queue = JobQueue(redis, replace(settings, submits_per_minute=3), count_tokens=None)
    owner = new_account()
    for _ in range(3):
        queue.submit(owner, {"prompt": "a cat", **SMALL})
    with pytest.raises(TooBusy, match="at most 3 submits a minute per account; try again in") as refused:
        queue.submit(owner, {"prompt": "too soon", **SMALL})
    assert 1 <= refused.value.retry_after_s <= 61
