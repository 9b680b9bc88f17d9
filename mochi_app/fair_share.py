"""Fair share by predicted GPU time: where a new job goes in the queue, and the index that finds it cheaply.

Start-time fair queuing, in predicted GPU-seconds: each waiting job carries a tag, its virtual start, and
the queue is kept in tag order. The queue's virtual time V is the tag of the job that started last (the
highest tag among the lowest entries that no longer wait, kept in the clock), never above the lowest tag
still waiting, and a new job's tag is

    tag = min(max(V, the account's last finish), V + MOCHI_FAIR_SHARE_WINDOW_S)

where an account's last finish is its previous job's tag plus that job's predicted run seconds. An account
with nothing waiting starts at V, level with the job in service, so it goes ahead of every busy account's
next job; an account with a backlog has tags ahead of V by the GPU time it has queued, and never by more
than the window. V follows the jobs as they start, not the wall clock, so a worker that runs slower than
predicted owes nobody anything. A job is passed only by jobs tagged lower: by accounts with less queued
GPU time than its own, each for at most the difference, so how long it can wait is bounded by how many
accounts may queue (the per-address and per-account limits, and budgets). Jobs put back at the front (a
lost or stopping worker's) carry no tag and stay there.

The index (`fair:{queue}:*`) is written at submit and read at the next ones; it is never the truth about
which jobs wait (the records and RQ's list are), so entries of jobs that left are dropped as they are met.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from redis import Redis
from redis.client import Pipeline

from mochi_app.records import JobRecord, JobStatus
from mochi_app.rq_layout import RQLayout
from mochi_app.store import job_key

PIVOT_BATCH = 16  # tagged jobs read at a time while looking for the first one still waiting
LOWEST_FIRST = 4  # the lowest tags read first: mostly the few jobs workers took since the last submit
LAST_FINISH_TTL_S = 86_400
CLOCK = "clock"
Reader = Redis | Pipeline


def _ids(raws: object) -> list[str]:
    """Job ids as Redis answers them (bytes), as text."""
    return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in cast(list[bytes | str], raws)]


def _scored(raws: object) -> list[tuple[str, float]]:
    """(job id, tag) pairs as Redis answers a WITHSCORES read, ids as text."""
    return [(_ids([job_id])[0], float(score)) for job_id, score in cast(list[tuple[bytes, float]], raws)]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a job would go: its tag, the waiting job it goes before (None: the back) and how many are ahead."""

    tag: float
    finish: float  # the tag plus the job's predicted seconds: where the account's next job may start
    virtual_now: float  # V when it was placed
    pivot: str | None
    position: int
    gone: list[str] = field(default_factory=list)  # index entries of jobs no longer waiting, to drop


class FairShare:
    """One queue's fair-share index in Redis."""

    def __init__(self, redis: Redis, layout: RQLayout, queue_name: str, window_s: int) -> None:
        self.redis = redis
        self.layout = layout
        self.window_s = window_s
        prefix = f"fair:{queue_name}"
        self.tags_key = f"{prefix}:tags"  # sorted set: waiting job id -> tag
        self.costs_key = f"{prefix}:costs"  # hash: waiting job id -> predicted run seconds
        self.clock_key = f"{prefix}:clock"  # sorted set of one: V as the last submit found it (only grows)
        self._prefix = prefix

    def last_tag_key(self, account_id: str) -> str:
        return f"{self._prefix}:last:{account_id}"

    def account_key(self, account_id: str) -> str:
        return f"{self._prefix}:account:{account_id}"  # sorted set of the account's waiting jobs, by submit time

    def address_key(self, address: str) -> str:
        return f"{self._prefix}:address:{address}"  # the same for free accounts' jobs from one address

    def place(self, reader: Reader, account_id: str, cost_s: float, after: float | None = None) -> Placement:
        """Where a job of `account_id` predicted to take `cost_s` goes, read through `reader` (a WATCHing
        pipeline in a submit, so that what it read still holds when the job is written); `after` is the
        finish of the account's job placed just before it in the same submit (a sweep's), not yet written."""
        virtual_now, gone = self._virtual_time(reader)
        last = after
        if last is None:
            raw = reader.get(self.last_tag_key(account_id))
            last = float(raw) if raw is not None else virtual_now
        tag = min(max(virtual_now, last), virtual_now + self.window_s)
        finish = tag + cost_s
        offset = 0
        while True:
            batch = _scored(
                reader.zrangebyscore(self.tags_key, f"({tag!r}", "+inf", start=offset, num=PIVOT_BATCH, withscores=True)
            )
            for job_id, score in batch:
                if reader.lpos(self.layout.waiting_key, job_id) is not None:
                    pivot, position = self._first_of(reader, score)
                    return Placement(tag, finish, virtual_now, pivot, position, gone)
            # Off the list: taken by a worker (still PENDING) or ended.
            gone += self._gone(reader, [job_id for job_id, _ in batch])
            if len(batch) < PIVOT_BATCH:
                return Placement(tag, finish, virtual_now, None, int(reader.llen(self.layout.waiting_key)), gone)
            offset += PIVOT_BATCH

    def _first_of(self, reader: Reader, score: float) -> tuple[str, int]:
        """Of the waiting jobs tagged `score`, the one nearest the front, and where it is: tags tie often
        (every newcomer starts at V), and the sorted set orders ties by id, not by their place in the queue.

        The positions are read in one batch beside the submit's WATCHing connection: should the queue
        change meanwhile, that connection's transaction fails and the submit reads again.
        """
        tied = _ids(reader.zrangebyscore(self.tags_key, score, score))
        with self.redis.pipeline(transaction=False) as batch:
            for job_id in tied:
                batch.lpos(self.layout.waiting_key, job_id)
            positions = cast(list[int | None], batch.execute())
        position, pivot = min(
            (position, job_id) for job_id, position in zip(tied, positions, strict=True) if position is not None
        )
        return pivot, position

    def _virtual_time(self, reader: Reader) -> tuple[float, list[str]]:
        """V, and the lowest entries met that no longer wait (started or ended: their tags are V's history)."""
        raw = reader.zscore(self.clock_key, CLOCK)
        clock = float(raw) if raw is not None else 0.0
        gone: list[str] = []
        offset, size = 0, LOWEST_FIRST
        while True:
            batch = _scored(reader.zrange(self.tags_key, offset, offset + size - 1, withscores=True))
            ended = set(self._gone(reader, [job_id for job_id, _ in batch]))
            for job_id, score in batch:
                if job_id not in ended:
                    return min(clock, score), gone
                clock = max(clock, score)
            gone += sorted(ended)
            if len(batch) < size:
                return clock, gone
            offset, size = offset + size, PIVOT_BATCH

    def add(self, pipe: Pipeline, record: JobRecord, placement: Placement, address_key: str | None) -> None:
        """Index the new job, inside the submit's transaction (under `address_key` too, when its address counts)."""
        job_id = record.job_id
        pipe.zadd(self.tags_key, {job_id: placement.tag})
        pipe.hset(self.costs_key, job_id, record.quote.run_s if record.quote else 0.0)
        pipe.zadd(self.account_key(record.account_id), {job_id: record.created_at})
        if address_key is not None:
            pipe.zadd(address_key, {job_id: record.created_at})
        # A day without jobs and the account's history no longer counts: its next job starts at V anyway.
        pipe.set(self.last_tag_key(record.account_id), repr(placement.finish), ex=LAST_FINISH_TTL_S)
        pipe.zadd(self.clock_key, {CLOCK: placement.virtual_now}, gt=True)
        self.forget(pipe, placement.gone)

    def forget(self, pipe: Pipeline, job_ids: Sequence[str]) -> None:
        if job_ids:
            pipe.zrem(self.tags_key, *job_ids)
            pipe.hdel(self.costs_key, *job_ids)

    def untag(self, pipe: Pipeline, job_id: str) -> None:
        """A job put back at the front: it has waited its turn, so no tag may place a new job before it."""
        pipe.zrem(self.tags_key, job_id)

    def waiting_in(self, reader: Reader, key: str) -> tuple[int, list[str]]:
        """How many jobs in the account's (or address's) set still wait, and the ids of those that do not
        (for `drop`, in the same transaction)."""
        job_ids = _ids(reader.zrange(key, 0, -1))
        gone = self._gone(reader, job_ids)
        return len(job_ids) - len(gone), gone

    @staticmethod
    def drop(pipe: Pipeline, key: str, job_ids: Sequence[str]) -> None:
        if job_ids:
            pipe.zrem(key, *job_ids)

    def costs_ahead(self, reader: Reader, position: int) -> list[float]:
        """The predicted seconds of the first `position` waiting jobs (those put back at the front read from
        their records)."""
        if position <= 0:
            return []
        job_ids = _ids(reader.lrange(self.layout.waiting_key, 0, position - 1))
        costs = cast(list[bytes | None], reader.hmget(self.costs_key, job_ids))
        missing = [job_id for job_id, cost in zip(job_ids, costs, strict=True) if cost is None]
        quoted = {record.job_id: record.quote.run_s for record in _records(reader, missing) if record.quote}
        return [
            float(cost) if cost is not None else quoted.get(job_id, 0.0)
            for job_id, cost in zip(job_ids, costs, strict=True)
        ]

    @staticmethod
    def _gone(reader: Reader, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` whose record no longer says PENDING (or is gone)."""
        raws = cast(list[bytes | None], reader.mget([job_key(job_id) for job_id in job_ids])) if job_ids else []
        return [
            job_id
            for job_id, raw in zip(job_ids, raws, strict=True)
            if raw is None or json.loads(raw).get("status") != JobStatus.PENDING.value
        ]


def _records(reader: Reader, job_ids: list[str]) -> list[JobRecord]:
    raws = cast(list[bytes | None], reader.mget([job_key(job_id) for job_id in job_ids])) if job_ids else []
    return [JobRecord.model_validate_json(raw) for raw in raws if raw is not None]


def start_in_s(running_left_s: Sequence[float], ahead_s: Sequence[float], workers: int) -> float | None:
    """When a job with `ahead_s` jobs before it starts, the running jobs having `running_left_s` to go:
    each worker takes the next job as it frees up. None with no live worker."""
    if workers <= 0:
        return None
    free = sorted(running_left_s)[:workers]
    free += [0.0] * (workers - len(free))
    heapq.heapify(free)
    for cost in ahead_s:
        heapq.heappush(free, heapq.heappop(free) + cost)
    return round(free[0], 1)
