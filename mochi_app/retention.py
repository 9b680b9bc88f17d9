"""Removing jobs for good: one at its owner's request, or every job that ended before the retention period."""

from __future__ import annotations

import logging
import time

from mochi_app.records import JobRecord
from mochi_app.storage import VideoStorage
from mochi_app.store import JobStore

log = logging.getLogger(__name__)

DAY_S = 24 * 3600
EXPIRY_BATCH = 200


def remove_job(store: JobStore, videos: VideoStorage, record: JobRecord) -> None:
    """Its videos (every attempt's), then its record and index entries (a crash in between leaves no orphan video)."""
    videos.remove(record)
    store.delete(record.job_id, record.account_id, record.batch_id)


def expire_finished_jobs(
    store: JobStore, videos: VideoStorage, retention_days: int, now: float | None = None, guests_only: bool = False
) -> int:
    """Remove every job (or guest's job) that ended more than `retention_days` ago (0 keeps them all);
    returns how many."""
    if retention_days == 0:
        return 0
    cutoff = (time.time() if now is None else now) - retention_days * DAY_S
    removed = 0
    while job_ids := store.finished_before(cutoff, EXPIRY_BATCH, guests_only):
        for job_id in job_ids:
            record = store.get(job_id)
            if record is None:
                store.delete(job_id, account_id=None)
            else:
                remove_job(store, videos, record)
            removed += 1
    if removed:
        whose = "guests' job(s)" if guests_only else "job(s)"
        log.info("retention: removed %d %s that ended over %d day(s) ago", removed, whose, retention_days)
    return removed
