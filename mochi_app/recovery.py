"""Putting jobs back on the queue: a lost worker's job retried once, a stopping worker's given back, one RQ lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.client import Pipeline

from mochi_app.queue import MAX_ATTEMPTS, WORKER_LOST, JobQueue
from mochi_app.records import JobRecord, JobStatus

log = logging.getLogger(__name__)


class Recovery:
    """The worker side's edits of one queue: every one a transaction on the job's record (JobStore.update)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.store = queue.store
        self.redis = queue.redis
        self.layout = queue.layout

    def recover(self, job_id: str, lost_worker: str) -> JobRecord | None:
        """A job whose worker is gone: back to the front of the queue once, FAILED "worker lost" after that.

        Does nothing unless the job is still RUNNING on `lost_worker`. Returns the record afterwards.
        """
        return self._requeue(job_id, lost_worker, lost=True)

    def give_back(self, job_id: str, worker_id: str) -> JobRecord | None:
        """A stopping worker hands its job back to the front of the queue; the attempt does not count."""
        return self._requeue(job_id, worker_id, lost=False)

    def _requeue(self, job_id: str, worker_id: str, lost: bool) -> JobRecord | None:
        changed = False

        def retry_or_fail(record: JobRecord) -> JobRecord | None:
            nonlocal changed
            if record.status is not JobStatus.RUNNING or record.worker_id != worker_id:
                return None
            changed = True
            if record.cancel_requested:
                return record.model_copy(update={"status": JobStatus.CANCELLED, "finished_at": time.time()})
            if lost and record.attempts >= MAX_ATTEMPTS:
                return record.model_copy(
                    update={"status": JobStatus.FAILED, "finished_at": time.time(), "error": WORKER_LOST}
                )
            restart = {
                "status": JobStatus.PENDING,
                "worker_id": None,
                "started_at": None,
                "model": None,
                "attempts": record.attempts if lost else record.attempts - 1,
                "progress": record.progress.model_copy(update={"step": 0}),
                "denoised_at": None,
            }
            return record.model_copy(update=restart)

        def requeue(pipe: Pipeline, record: JobRecord) -> None:
            if record.status is JobStatus.PENDING:
                self.queue.push(pipe, record.job_id, at_front=True)  # it has waited its turn once already

        record = self.store.update(job_id, retry_or_fail, along_with=requeue)
        if changed and record is not None:
            why = "lost" if lost else "stopping"
            log.warning(
                "job %s: worker %s %s; the job is now %s",
                job_id,
                worker_id,
                why,
                record.status,
                extra={"job_id": job_id},
            )
        return record

    def restore(self, job_id: str) -> bool:
        """Put a waiting job back on the queue if RQ has lost its copy; returns whether it did.

        RQ deletes its copy of a job once a worker has run it, even when the job went back on the
        queue meanwhile (given back by a stopping worker, or re-queued by the reaper): each worker
        calls this after every job, so such a job waits with a copy again.
        """
        return self.requeue_waiting(job_id, only_if=lambda: not self.layout.holds_job(job_id))

    def taken_but_waiting(self) -> set[str]:
        """Jobs RQ has taken off the queue (handed to a worker) whose record still says PENDING.

        A live worker marks such a job RUNNING within milliseconds; one seen here twice, a reaper
        round apart, was taken by a worker that died in between.
        """
        records = [self.store.get(job_id) for job_id in sorted(self.layout.taken())]
        return {record.job_id for record in records if record is not None and record.status is JobStatus.PENDING}

    def requeue_waiting(self, job_id: str, only_if: Callable[[], bool] = lambda: True) -> bool:
        """Put a PENDING job at the front of the queue afresh, dropping whatever RQ still holds of it."""
        executions: list[bytes] = []

        def if_still_waiting(record: JobRecord) -> JobRecord | None:
            if record.status is not JobStatus.PENDING or not only_if():
                return None
            executions[:] = self.layout.executions(self.redis, job_id)
            return record

        requeued = False

        def afresh(pipe: Pipeline, record: JobRecord) -> None:
            nonlocal requeued
            requeued = True
            self.layout.forget(pipe, job_id, executions)
            self.queue.push(pipe, job_id, at_front=True)

        self.store.update(job_id, if_still_waiting, along_with=afresh)
        if requeued:
            log.warning("job %s: put back at the front of the queue", job_id, extra={"job_id": job_id})
        return requeued
