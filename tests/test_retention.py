"""Removing jobs for good: finished jobs past the retention period go (record, gallery entry, video); others stay."""

from __future__ import annotations

import time
from pathlib import Path

from redis import Redis

from mochi_app.config import Settings
from mochi_app.records import JobRecord, JobStatus
from mochi_app.retention import DAY_S, expire_finished_jobs
from mochi_app.storage import FolderStorage
from mochi_app.store import FINISHED_KEY, GUESTS_FINISHED_KEY, JobStore, account_jobs_key
from mochi_app.video import job_videos
from tests.harness import new_account
from tests.test_store import make_record


def job_in(store: JobStore, account: str, status: JobStatus, finished_days_ago: float | None = None) -> JobRecord:
    record = make_record(account, time.time() - 10 * DAY_S)
    store.create(record)
    finished_at = None if finished_days_ago is None else time.time() - finished_days_ago * DAY_S
    changed = store.update(record.job_id, lambda r: r.model_copy(update={"status": status, "finished_at": finished_at}))
    assert changed is not None
    return changed


def test_jobs_that_ended_before_the_retention_period_are_removed_with_their_videos(
    redis: Redis, tmp_path: Path
) -> None:
    store, account = JobStore(redis), new_account()
    old = job_in(store, account, JobStatus.COMPLETED, finished_days_ago=3)
    old_failure = job_in(store, account, JobStatus.FAILED, finished_days_ago=2.5)
    recent = job_in(store, account, JobStatus.COMPLETED, finished_days_ago=1)
    running = job_in(store, account, JobStatus.RUNNING)
    waiting = job_in(store, account, JobStatus.PENDING)
    for record in (old, recent):
        (tmp_path / f"{record.job_id}.mp4").write_bytes(b"mp4")
        (tmp_path / f"{record.job_id}.0123456789ab.mp4").write_bytes(b"another attempt's mp4")

    assert expire_finished_jobs(store, FolderStorage(tmp_path, tmp_path), retention_days=2) == 2

    assert store.get(old.job_id) is None and store.get(old_failure.job_id) is None
    assert job_videos(tmp_path, old.job_id) == []
    assert len(job_videos(tmp_path, recent.job_id)) == 2
    kept = {raw.decode() for raw in redis.zrange(account_jobs_key(account), 0, -1)}
    assert kept == {recent.job_id, running.job_id, waiting.job_id}
    assert redis.zscore(FINISHED_KEY, old.job_id) is None and redis.zscore(FINISHED_KEY, recent.job_id) is not None


def test_retention_is_off_by_default(redis: Redis, tmp_path: Path) -> None:
    store = JobStore(redis)
    ancient = job_in(store, new_account(), JobStatus.COMPLETED, finished_days_ago=3650)
    assert expire_finished_jobs(store, FolderStorage(tmp_path, tmp_path), retention_days=0) == 0
    assert store.get(ancient.job_id) is not None


def test_guests_jobs_have_a_retention_period_of_their_own(redis: Redis, tmp_path: Path) -> None:
    store = JobStore(redis)
    guest, keyed = f"guest-{new_account()}", new_account()
    old_guest = job_in(store, guest, JobStatus.COMPLETED, finished_days_ago=8)
    recent_guest = job_in(store, guest, JobStatus.COMPLETED, finished_days_ago=6)
    old_keyed = job_in(store, keyed, JobStatus.COMPLETED, finished_days_ago=8)

    assert expire_finished_jobs(store, FolderStorage(tmp_path, tmp_path), retention_days=7, guests_only=True) == 1

    assert store.get(old_guest.job_id) is None
    assert store.get(recent_guest.job_id) is not None and store.get(old_keyed.job_id) is not None
    assert redis.zscore(GUESTS_FINISHED_KEY, old_keyed.job_id) is None  # only guests' jobs are in its index
    store.delete(recent_guest.job_id, guest)
    assert redis.zscore(GUESTS_FINISHED_KEY, recent_guest.job_id) is None
    assert Settings().guest_retention_days == 7 and Settings().retention_days == 0  # guests' go; others' stay
