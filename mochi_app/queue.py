"""The only producer-side module that touches RQ: submit, cancel, queue position."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import cancel_job
from rq.serializers import JSONSerializer

from mochi_app.config import Settings
from mochi_app.schemas import GenerationRequest, JobRecord, JobStatus, Progress, TokenCounter
from mochi_app.store import JobStore

log = logging.getLogger(__name__)

RENDER_TASK = "mochi_app.tasks.render"
FAILURE_TTL_S = 7 * 24 * 3600


def rq_queue(redis: Redis, settings: Settings) -> Queue:
    """The RQ queue workers take jobs from; JSON-serialized so Redis never holds pickles."""
    return Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)


class JobQueue:
    """Puts validated requests on the queue and takes them off again."""

    def __init__(self, redis: Redis, settings: Settings, count_tokens: TokenCounter) -> None:
        self.redis = redis
        self.settings = settings
        self.count_tokens = count_tokens
        self.store = JobStore(redis)
        self.rq = rq_queue(redis, settings)

    def submit(self, account_id: str, params: Mapping[str, Any]) -> JobRecord:
        """Validate `params`, then record a PENDING job and enqueue it in one Redis transaction.

        Raises InvalidRequest (and enqueues nothing) when a parameter breaks a rule.
        """
        request = GenerationRequest.parse(params, self.settings.limits, self.count_tokens)
        job_id = str(uuid.uuid4())
        record = JobRecord(
            job_id=job_id,
            account_id=account_id,
            request=request,
            num_frames=request.rendered_num_frames,
            created_at=time.time(),
            progress=Progress(total=request.num_inference_steps),
        )
        with self.redis.pipeline() as pipe:
            pipe.multi()  # RQ expects a transaction already open when handed a pipeline
            self.store.create(record, pipe)
            self.rq.enqueue(
                RENDER_TASK,
                job_id,
                job_id=job_id,
                job_timeout=self.settings.job_timeout_s,
                result_ttl=0,  # the job record is the result; RQ's copy would only duplicate it
                failure_ttl=FAILURE_TTL_S,
                description=f"render {job_id}",
                pipeline=pipe,
            )
            pipe.execute()
        log.info("job %s submitted for account %s", job_id, account_id)
        return record

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a job: a pending one never runs, a running one stops at its next step.

        Returns the record after the request (unchanged when already finished), or None if unknown.
        """

        def request_cancel(record: JobRecord) -> JobRecord | None:
            if record.status is JobStatus.PENDING:
                return record.model_copy(
                    update={"status": JobStatus.CANCELLED, "cancel_requested": True, "finished_at": time.time()}
                )
            if record.status is JobStatus.RUNNING and not record.cancel_requested:
                return record.model_copy(update={"cancel_requested": True})
            return None

        record = self.store.update(job_id, request_cancel)
        if record is not None and record.status is JobStatus.CANCELLED:
            self._drop_from_queue(job_id)
        if record is not None:
            log.info("job %s: cancel requested (%s)", job_id, record.status)
        return record

    def position(self, job_id: str) -> int | None:
        """How many jobs are ahead of this one in the queue; None if it is not waiting."""
        return self.rq.get_job_position(job_id)

    def depth(self) -> int:
        """How many jobs are waiting."""
        return self.rq.count

    def live_workers(self) -> int:
        """Workers registered on this queue whose registration has not expired."""
        keys = Worker.all_keys(connection=self.redis, queue=self.rq)
        return int(self.redis.exists(*keys)) if keys else 0

    def _drop_from_queue(self, job_id: str) -> None:
        # The record already says CANCELLED, so a worker that dequeued the job first skips it.
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
            cancel_job(job_id, connection=self.redis, serializer=JSONSerializer)
