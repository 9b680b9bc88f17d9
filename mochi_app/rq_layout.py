"""Where rq 3.0 keeps one queue's jobs in Redis: the edits RQ has no call for, in one place.

RQ's own calls open transactions of their own; ours must change RQ's keys inside the transaction that
changes the job's record (JobStore.update), so they write these keys directly. tests/test_rq_layout.py
pins each one to what rq 3.0 itself does: read it again before moving to another rq.
"""

from __future__ import annotations

from typing import cast

from redis import Redis
from redis.client import Pipeline
from rq import Queue


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RQLayout:
    """One RQ queue's keys: the waiting list, the jobs taken but not started, and the started registry."""

    def __init__(self, rq: Queue) -> None:
        self.rq = rq
        self.waiting_key = rq.key  # a list of job ids, the next one to run first
        self.taken_key = rq.intermediate_queue_key  # dequeued by a worker, not yet started
        self.started_key = rq.started_job_registry.key  # a sorted set of "{job_id}:{execution_id}"

    def waiting(self, client: Redis | Pipeline) -> list[str]:
        """The waiting job ids, the next one first."""
        return [_text(raw) for raw in cast(list[bytes], client.lrange(self.waiting_key, 0, -1))]

    def move_before(self, pipe: Pipeline, job_id: str, pivot: str) -> None:
        """Move the just-enqueued `job_id` (last on the list) to stand before `pivot` (fair share's place)."""
        pipe.lrem(self.waiting_key, -1, job_id)  # from the tail, where it stands: no walk of the list
        pipe.linsert(self.waiting_key, "BEFORE", pivot, job_id)

    def drop_waiting(self, pipe: Pipeline, job_id: str) -> None:
        """Take `job_id` off the waiting list, wherever (and however often) it stands there."""
        pipe.lrem(self.waiting_key, 0, job_id)

    def executions(self, client: Redis | Pipeline, job_id: str) -> list[bytes]:
        """The started registry's entries for `job_id`, as stored."""
        entries = cast(list[bytes], client.zrange(self.started_key, 0, -1))
        return [entry for entry in entries if entry.startswith(f"{job_id}:".encode())]

    def forget(self, pipe: Pipeline, job_id: str, executions: list[bytes]) -> None:
        """Drop all RQ holds of `job_id`: waiting, taken, and the started `executions` read beforehand."""
        self.drop_waiting(pipe, job_id)
        pipe.lrem(self.taken_key, 0, job_id)
        if executions:
            pipe.zrem(self.started_key, *executions)

    def taken(self) -> set[str]:
        """Job ids a worker has dequeued or started (RQ's own reads)."""
        return {*self.rq.intermediate_queue.get_job_ids(), *self.rq.started_job_registry.get_job_ids()}

    def holds_job(self, job_id: str) -> bool:
        """Whether RQ still keeps its job hash for `job_id`."""
        return bool(self.rq.connection.exists(self.rq.job_class.key_for(job_id)))
