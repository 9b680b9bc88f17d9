"""What the web offers an account: submit (one job, or a seed sweep), look up, list, cancel and delete its own jobs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from mochi_app.accounts import AccountStore
from mochi_app.budgets import Budget
from mochi_app.callers import Callers
from mochi_app.config import Settings
from mochi_app.disk import check_free_space
from mochi_app.errors import BatchNotFound, JobConflict, JobNotFound
from mochi_app.presets import final_of
from mochi_app.public import BatchPublic, HealthPublic, JobPagePublic, JobPublic, QuotePublic, WorkerStatePublic
from mochi_app.queue import JobQueue, SubmitOptions
from mochi_app.records import JobRecord, JobStatus
from mochi_app.retention import remove_job
from mochi_app.schemas import InvalidRequest
from mochi_app.served_model import ServedModel, ServedModels
from mochi_app.storage import Method, VideoLocation, open_storage
from mochi_app.worker_state import WorkerState, WorkerStates, why_not_ready

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100


class Studio:
    """The web process's view of the queue, always on behalf of one account."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.models = ServedModels(redis, settings.queue_name)
        self.queue = JobQueue(redis, settings, self.models.count_tokens)
        self.store = self.queue.store
        self.videos = open_storage(settings)
        self.accounts = AccountStore(redis)
        self.callers = Callers(self.accounts, settings)
        self.worker_states = WorkerStates(redis, settings.queue_name, settings.heartbeat_ttl_s)

    def submit(
        self,
        account_id: str,
        params: Mapping[str, Any],
        address: str | None = None,
        options: SubmitOptions | None = None,
    ) -> JobPublic:
        """Validate and enqueue for a client at `address`; raises InvalidRequest naming each bad field,
        and LowOnDisk when the server is nearly out of space. See JobQueue.submit for `options`."""
        check_free_space(self.settings)
        return self.public(self.queue.submit(account_id, params, address, options))

    def sweep(
        self,
        account_id: str,
        params: Mapping[str, Any],
        address: str | None = None,
        options: SubmitOptions | None = None,
    ) -> BatchPublic:
        """Queue one request at several seeds as one batch (`count` or `seeds`, sweeps.parse_sweep): all of
        its jobs or none, each counted by every limit."""
        check_free_space(self.settings)
        records = self.queue.sweep(account_id, params, address, options)
        return BatchPublic.of(records[0].batch_id or "", [self.public(record) for record in records])

    def batch(self, account_id: str, batch_id: str) -> BatchPublic:
        """The account's own sweep, its jobs in their seeds' order; BatchNotFound for a malformed id, one
        whose jobs are all deleted, or someone else's."""
        return BatchPublic.of(batch_id, [self.public(record) for record in self._batch_records(account_id, batch_id)])

    def cancel_batch(self, account_id: str, batch_id: str) -> BatchPublic:
        """Cancel every job of the sweep that has not ended (those that have stay as they are)."""
        for record in self._batch_records(account_id, batch_id):
            if not record.status.is_terminal:
                self.queue.cancel(record.job_id)
        return self.batch(account_id, batch_id)

    def _batch_records(self, account_id: str, batch_id: str) -> list[JobRecord]:
        if not _is_uuid(batch_id):
            raise BatchNotFound(batch_id)
        records = [
            record
            for record in self.store.get_many(self.store.batch_job_ids(batch_id))
            if record.account_id == account_id
        ]
        if not records:
            raise BatchNotFound(batch_id)
        return records

    def make_final(self, account_id: str, job_id: str, address: str | None = None) -> JobPublic:
        """Queue the job's request again with the Final preset's steps, at its seed and latent shape
        (presets.final_of), as a new job of its own."""
        return self.submit(account_id, final_of(self.record(account_id, job_id).request, self.settings.limits), address)

    def quote(self, account_id: str, params: Mapping[str, Any]) -> QuotePublic:
        """What `params` would cost the account and when they would start; InvalidRequest as a submit would."""
        quote = self.queue.quote(account_id, params)
        left = quote.budget.left_gpu_s
        return QuotePublic(
            estimated_run_s=quote.cost.run_s,
            estimated_wait_s=quote.estimated_wait_s,
            queue_position=quote.queue_position,
            live_workers=quote.live_workers,
            cost=quote.cost,
            calibrated_on=quote.calibrated_on,
            budget=quote.budget,
            fits_budget=left is None or quote.cost.run_s <= left,
            request=quote.request,
        )

    def budget(self, account_id: str) -> Budget:
        return self.queue.budgets.balance(account_id)

    def record(self, account_id: str, job_id: str) -> JobRecord:
        """The account's own job, or JobNotFound (also for a malformed id or someone else's job)."""
        if not _is_uuid(job_id):
            raise JobNotFound(job_id)
        record = self.store.get(job_id)
        if record is None or record.account_id != account_id:
            raise JobNotFound(job_id)
        return record

    def status(self, account_id: str, job_id: str) -> JobPublic:
        return self.public(self.record(account_id, job_id))

    def video(self, account_id: str, job_id: str, method: Method = "GET") -> VideoLocation:
        """Where the finished MP4 is (a file here, or a short-lived link to the object store);
        JobConflict while the job has not completed."""
        record = self._completed(account_id, job_id, "its video can be downloaded")
        location = self.videos.locate(record, method)
        if location is None:
            raise JobConflict(f"job {job_id} completed but its video file is gone")
        return location

    def poster(self, account_id: str, job_id: str, method: Method = "GET") -> VideoLocation:
        """Where the finished video's poster is, as `video`; JobConflict also when it has none (a job
        finished before posters were made, or a store that refused it)."""
        record = self._completed(account_id, job_id, "its thumbnail is made")
        location = self.videos.locate_poster(record, method)
        if location is None:
            raise JobConflict(f"job {job_id} has no thumbnail: its video has none, or it is gone")
        return location

    def preview(self, account_id: str, job_id: str) -> bytes:
        """The running job's latest live preview (WebP); JobConflict when it has none (not RUNNING, or no
        preview made yet)."""
        record = self.record(account_id, job_id)
        image = self.store.preview(job_id) if record.status is JobStatus.RUNNING and record.preview_step else None
        if image is None:
            raise JobConflict(f"job {job_id} is {record.status}; a preview is made every few steps while RUNNING")
        return image

    def _completed(self, account_id: str, job_id: str, what_then: str) -> JobRecord:
        record = self.record(account_id, job_id)
        if record.status is not JobStatus.COMPLETED:
            raise JobConflict(f"job {job_id} is {record.status}; {what_then} once it is COMPLETED")
        return record

    def jobs(self, account_id: str, limit: int = 20, cursor: str | None = None) -> JobPagePublic:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest({"limit": f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"})
        page = self.store.list_for_account(account_id, limit, cursor)
        return JobPagePublic(jobs=[self.public(record) for record in page.records], next_cursor=page.next_cursor)

    def cancel(self, account_id: str, job_id: str) -> JobPublic:
        """Cancel a pending or running job; JobConflict once it has finished."""
        record = self.record(account_id, job_id)
        if record.status.is_terminal:
            raise JobConflict(f"job {job_id} is already {record.status}")
        cancelled = self.queue.cancel(job_id)
        if cancelled is None:
            raise JobNotFound(job_id)
        return self.public(cancelled)

    def delete(self, account_id: str, job_id: str) -> None:
        """Remove a finished job: its record, its place in the gallery and its video."""
        record = self.record(account_id, job_id)
        if not record.status.is_terminal:
            raise JobConflict(f"job {job_id} is {record.status}; cancel it before deleting it")
        remove_job(self.store, self.videos, record)
        log.info("job %s deleted by its account", job_id, extra={"job_id": job_id})

    def model(self) -> ServedModel | None:
        return self.models.current()

    def workers(self) -> list[WorkerState]:
        """Each worker's start-up state: downloading, loading, warming up, ready or failed."""
        return self.worker_states.all()

    def health(self) -> HealthPublic:
        try:
            self.redis.ping()
            workers, depth, card = self.queue.live_workers(), self.queue.depth(), self.model()
            states = self.workers()
        except RedisError:
            return HealthPublic(status="unavailable", redis=False, live_workers=0, queue_depth=0, model=None)
        return HealthPublic(
            status="ok" if workers else "degraded",
            redis=True,
            live_workers=workers,
            queue_depth=depth,
            model=card.name if card else None,
            detail=None if workers else why_not_ready(states),
            workers=[WorkerStatePublic.model_validate(state.model_dump()) for state in states],
        )

    def public(self, record: JobRecord) -> JobPublic:
        """The job as REST, the event stream and the Gradio API show it (its queue position read now)."""
        position = self.queue.position(record.job_id) if record.status is JobStatus.PENDING else None
        start_in_s = self.queue.start_in_s(position) if position is not None else None
        return JobPublic.of(record, position, self._has_video(record), start_in_s)

    def _has_video(self, record: JobRecord) -> bool:
        return record.status is JobStatus.COMPLETED and self.videos.has(record)


def _is_uuid(identifier: str) -> bool:
    """Whether `identifier` is a UUID as ours are; any other (a crafted path, a guess) names nothing."""
    try:
        uuid.UUID(identifier)
    except ValueError:
        return False
    return True
