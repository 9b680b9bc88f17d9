"""Job records (`job:{job_id}`) and per-account indexes (`account:{account_id}:jobs`) in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis.client import Pipeline

from mochi_app.budgets import record_usage
from mochi_app.guests import GUEST_PREFIX
from mochi_app.job_events import events_key, record_event
from mochi_app.records import JobRecord, JobStatus
from mochi_app.schemas import InvalidRequest
from mochi_app.tallies import record_change
from mochi_app.webhooks import record_webhook

RecordChange = Callable[[JobRecord], JobRecord | None]
# More writes for the same transaction as a change, given the changed record (e.g. put it back on the queue).
AlongWith = Callable[[Pipeline, JobRecord], None]


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def preview_key(job_id: str) -> str:
    return f"preview:{job_id}"


PREVIEW_TTL_S = 3600  # a preview outlives no render by long: shown only while its job is RUNNING


def account_jobs_key(account_id: str) -> str:
    return f"account:{account_id}:jobs"


def batch_key(batch_id: str) -> str:
    """A sorted set of a seed sweep's job ids in their seeds' order; gone once its last job is deleted."""
    return f"batch:{batch_id}"


RUNNING_KEY = "jobs:running"  # a set of the ids of RUNNING jobs, kept in step with each record's status
FINISHED_KEY = "jobs:finished"  # ended jobs' ids by finished_at, for expiring them after the retention period
GUESTS_FINISHED_KEY = "jobs:finished:guests"  # the same for guests' jobs, which have a retention period of their own


def _score(record: JobRecord) -> int:
    # Whole microseconds: exact in a double, so a cursor never skips or repeats a job.
    return int(record.created_at * 1_000_000)


def _cursor_bound(cursor: str | None) -> str:
    """The exclusive upper score bound for a page after `cursor`."""
    if cursor is None:
        return "+inf"
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 20):
        raise InvalidRequest({"cursor": f"cursor must be a next_cursor value from a previous page, got {cursor!r}"})
    return f"({cursor}"


def _finished_keys(record: JobRecord) -> tuple[str, ...]:
    return (FINISHED_KEY, GUESTS_FINISHED_KEY) if record.account_id.startswith(GUEST_PREFIX) else (FINISHED_KEY,)


def _index(pipe: Pipeline, record: JobRecord) -> None:
    """The record, and its entries in its account's gallery and its sweep, inside `pipe`."""
    pipe.set(job_key(record.job_id), record.model_dump_json())
    pipe.zadd(account_jobs_key(record.account_id), {record.job_id: _score(record)})
    if record.batch_id is not None:
        pipe.zadd(batch_key(record.batch_id), {record.job_id: _score(record)})


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of an account's jobs, newest first; pass `next_cursor` back for the next page."""

    records: list[JobRecord]
    next_cursor: str | None


class JobStore:
    """Reads and writes job records; every change is an atomic read-modify-write."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def create(self, record: JobRecord, pipeline: Pipeline | None = None) -> None:
        """Write a new record and index it under its account (inside `pipeline` when given)."""
        pipe = pipeline if pipeline is not None else self.redis.pipeline()
        _index(pipe, record)
        record_change(pipe, None, record)
        record_event(pipe, None, record)
        record_usage(pipe, None, record)
        if pipeline is None:
            pipe.execute()

    def put_back(self, record: JobRecord, pipe: Pipeline) -> None:
        """Write a record as a snapshot kept it, with its account and finished indexes, inside `pipe`
        (the metrics' tallies count what happens from now on, so they are left alone)."""
        _index(pipe, record)
        if record.status.is_terminal:
            for finished_key in _finished_keys(record):
                pipe.zadd(finished_key, {record.job_id: record.finished_at or record.created_at})

    def job_ids(self, batch: int = 1000) -> Iterator[str]:
        """Every job's id (a SCAN: other writers go on meanwhile; a job made or deleted during it may be missed)."""
        for key in self.redis.scan_iter(match=job_key("*"), count=batch):
            yield (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(job_key(""))

    def get_many(self, job_ids: list[str]) -> list[JobRecord]:
        """The records of `job_ids` that still exist, in one round trip."""
        raws = self.redis.mget([job_key(job_id) for job_id in job_ids]) if job_ids else []
        return [JobRecord.model_validate_json(raw) for raw in raws if raw is not None]

    def batch_job_ids(self, batch_id: str) -> list[str]:
        """The ids of a sweep's jobs that have not been deleted, in their seeds' order."""
        raws = self.redis.zrange(batch_key(batch_id), 0, -1)
        return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in raws]

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.get(job_key(job_id))
        return None if raw is None else JobRecord.model_validate_json(raw)

    def keep_preview(self, job_id: str, image: bytes) -> None:
        """Replace the job's live preview (a few KB); the record's `preview_step` says when it was made."""
        self.redis.set(preview_key(job_id), image, ex=PREVIEW_TTL_S)

    def preview(self, job_id: str) -> bytes | None:
        return cast(bytes | None, self.redis.get(preview_key(job_id)))

    def update(self, job_id: str, change: RecordChange, along_with: AlongWith | None = None) -> JobRecord | None:
        """Apply `change` atomically (retried if another writer got there first).

        `change` returns the new record, or None to leave the record as it is; `along_with` adds writes
        to the same transaction when there is a change. Returns the record as stored afterwards, or
        None when there is no such job. Every status change passes here, so this is where the metrics'
        tallies move, in the same transaction: a job is counted exactly when its new status is written.
        """
        key = job_key(job_id)

        def transaction(pipe: Pipeline) -> JobRecord | None:
            raw = pipe.get(key)
            if raw is None:
                return None
            current = JobRecord.model_validate_json(raw)
            changed = change(current)
            if changed is None:
                return current
            pipe.multi()
            pipe.set(key, changed.model_dump_json())
            if changed.status is JobStatus.RUNNING:
                pipe.sadd(RUNNING_KEY, job_id)
            else:
                pipe.srem(RUNNING_KEY, job_id)
            finished_keys = _finished_keys(changed)
            if changed.status.is_terminal:
                for finished_key in finished_keys:
                    pipe.zadd(finished_key, {job_id: changed.finished_at or time.time()})
                pipe.delete(preview_key(job_id))  # shown only while RUNNING: no need to wait out its TTL
            else:
                pipe.zrem(FINISHED_KEY, job_id)
                pipe.zrem(GUESTS_FINISHED_KEY, job_id)
            record_change(pipe, current.status, changed)
            record_usage(pipe, current.status, changed)
            record_event(pipe, current, changed)
            record_webhook(pipe, current, changed)
            if along_with is not None:
                along_with(pipe, changed)
            return changed

        result = self.redis.transaction(transaction, key, value_from_callable=True)  # type: ignore[arg-type]
        return cast(JobRecord | None, result)

    def list_for_account(self, account_id: str, limit: int = 20, cursor: str | None = None) -> JobPage:
        """The account's jobs, newest first, `limit` at a time; the cost does not grow with the account."""
        upper = _cursor_bound(cursor)
        entries = self.redis.zrevrangebyscore(
            account_jobs_key(account_id), upper, "-inf", start=0, num=limit + 1, withscores=True
        )
        page = cast(list[tuple[bytes, float]], entries[:limit])
        raws = (
            cast(list[bytes | None], self.redis.mget([job_key(job_id.decode()) for job_id, _ in page])) if page else []
        )
        records = [JobRecord.model_validate_json(raw) for raw in raws if raw is not None]
        next_cursor = str(int(page[-1][1])) if len(entries) > limit else None
        return JobPage(records=records, next_cursor=next_cursor)

    def running_ids(self) -> list[str]:
        """Ids of the jobs that are RUNNING now (what the reaper checks for lost workers)."""
        return sorted(raw.decode() if isinstance(raw, bytes) else str(raw) for raw in self.redis.smembers(RUNNING_KEY))

    def running_count(self) -> int:
        return int(self.redis.scard(RUNNING_KEY))

    def finished_before(self, cutoff: float, limit: int, guests_only: bool = False) -> list[str]:
        """Ids of up to `limit` jobs (or guests' jobs) that ended before `cutoff` (a Unix time), oldest first."""
        key = GUESTS_FINISHED_KEY if guests_only else FINISHED_KEY
        raws = self.redis.zrangebyscore(key, "-inf", f"({cutoff}", start=0, num=limit)
        return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in raws]

    def delete(self, job_id: str, account_id: str | None, batch_id: str | None = None) -> None:
        """Remove a record and every index entry (its account's and its batch's, when known)."""
        with self.redis.pipeline() as pipe:
            pipe.delete(job_key(job_id), events_key(job_id), preview_key(job_id))
            pipe.srem(RUNNING_KEY, job_id)
            pipe.zrem(FINISHED_KEY, job_id)
            pipe.zrem(GUESTS_FINISHED_KEY, job_id)
            if account_id is not None:
                pipe.zrem(account_jobs_key(account_id), job_id)
            if batch_id is not None:
                pipe.zrem(batch_key(batch_id), job_id)
            pipe.execute()
