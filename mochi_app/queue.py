"""The producer side of the queue, the only one that enqueues with RQ: submit in fair turns, cancel, position."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import cancel_job
from rq.serializers import JSONSerializer

from mochi_app.accounts import FREE_ACCOUNT_PREFIXES
from mochi_app.budgets import Budget, Budgets
from mochi_app.config import Settings
from mochi_app.costs import CostModels
from mochi_app.eta import run_left_s
from mochi_app.fair_share import FairShare, Placement, start_in_s
from mochi_app.guests import address_group
from mochi_app.rate_limits import wait_s
from mochi_app.records import CostEstimate, JobRecord, JobStatus, Progress
from mochi_app.rq_layout import RQLayout
from mochi_app.schemas import CountTokens, GenerationRequest, InvalidRequest
from mochi_app.served_model import ServedModels
from mochi_app.store import JobStore, job_key
from mochi_app.sweeps import parse_sweep
from mochi_app.webhooks import WebhookSecrets, subscription

log = logging.getLogger(__name__)

RENDER_TASK = "mochi_app.tasks.render"
FAILURE_TTL_S = 7 * 24 * 3600
RATE_WINDOW_S = 60
MAX_ATTEMPTS = 2  # a job whose worker dies is run once more, then given up
WORKER_LOST = "worker lost: the worker running this job stopped, twice; try again, perhaps with fewer frames"
SUBMIT_RETRIES = 50  # a busy queue changes under WATCH; each retry costs one round trip
RETRY_JITTER_S = 0.002  # the most a retry waits grows by this each time: at most about 2.5 s in all
IDEMPOTENCY_TTL_S = 24 * 3600  # a retried submit with the same key within this returns the same job
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces, as Stripe's
MAX_CANCEL_AFTER_S = 7 * 24 * 3600
DEADLINE_MISSED = "it had not started by its deadline (Cancel-After)"
WEBHOOK_FIELDS = ("webhook_url", "webhook_events")  # beside the parameters, not part of the request
BATCH_STEP_S = 0.001  # a sweep's jobs are created this far apart, so the gallery and the batch keep the seeds' order


class IdempotencyConflict(ValueError):
    """An Idempotency-Key already used for a submit with other parameters."""


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """What a submit may ask besides the parameters: `Idempotency-Key` and `Cancel-After`, as sent."""

    idempotency_key: str | None = None
    cancel_after: str | None = None

    def cancel_after_s(self) -> float | None:
        """`Cancel-After` in seconds: `90`, `90s`, `5m`, `1h30m` (InvalidRequest otherwise)."""
        if self.cancel_after is None:
            return None
        raw = self.cancel_after.strip().lower()
        found = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", raw)
        if not raw or found is None:
            raise InvalidRequest(
                {"Cancel-After": f"Cancel-After must be a duration such as 90s, 5m or 1h30m, got {self.cancel_after!r}"}
            )
        hours, minutes, seconds = (float(part) if part else 0.0 for part in found.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if not 1 <= total <= MAX_CANCEL_AFTER_S:
            raise InvalidRequest(
                {"Cancel-After": f"Cancel-After must be between 1 s and 7 days, got {self.cancel_after!r}"}
            )
        return total

    def checked_key(self) -> str | None:
        key = self.idempotency_key
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidRequest(
                {"Idempotency-Key": "Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces"}
            )
        return key


def past_deadline(record: JobRecord, now: float) -> JobRecord:
    """The record of a job that had not started by its Cancel-After deadline: CANCELLED, saying why."""
    return record.model_copy(update={"status": JobStatus.CANCELLED, "finished_at": now, "error": DEADLINE_MISSED})


def idempotency_key(account_id: str, key: str) -> str:
    return f"idempotency:{account_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def _body_digest(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


class TooBusy(Exception):
    """The account is over one of its limits for now; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def heartbeat_key(worker_id: str) -> str:
    """Renewed every third of the TTL by a live worker (liveness.Heartbeat); gone soon after it dies or freezes."""
    return f"worker:{worker_id}:heartbeat"


def rate_key(account_id: str, window: int) -> str:
    return f"ratelimit:{account_id}:{window}"


def rq_queue(redis: Redis, settings: Settings) -> Queue:
    """The RQ queue workers take jobs from; JSON-serialized so Redis never holds pickles."""
    return Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)


@dataclass(frozen=True, slots=True)
class Quote:
    """What a request would cost, and when it would start, were it submitted now."""

    request: GenerationRequest
    cost: CostEstimate
    calibrated_on: int  # the timings the cost model was fitted to; 0: the arithmetic alone
    queue_position: int  # jobs that would wait ahead of it
    live_workers: int
    estimated_wait_s: float | None  # None: no worker is live
    budget: Budget


class JobQueue:
    """Puts validated requests on the queue in fair turns, and takes them off again."""

    def __init__(self, redis: Redis, settings: Settings, count_tokens: CountTokens | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.count_tokens = count_tokens
        self.store = JobStore(redis)
        self.rq = rq_queue(redis, settings)
        self.layout = RQLayout(self.rq)
        self.fair = FairShare(redis, self.layout, settings.queue_name, settings.fair_share_window_s)
        self.costs = CostModels(redis, settings.queue_name, settings.limits.gpu_tflops)
        self.models = ServedModels(redis, settings.queue_name)
        self.budgets = Budgets(redis, settings)

    def estimate(self, request: GenerationRequest) -> tuple[CostEstimate, int]:
        """The request's predicted seconds on the workers now serving, and how many timings back it."""
        card = self.models.current()
        fitted = self.costs.current(card.cost_profile if card else None, card.is_tiny if card else False)
        return fitted.estimate(request), fitted.samples

    def quote(self, account_id: str, params: Mapping[str, Any]) -> Quote:
        """What submitting `params` now would cost and when it would start; validated as a submit is
        (InvalidRequest), and nothing is written."""
        request = self._parse(params)
        cost, samples = self.estimate(request)
        now = time.time()
        workers = self.live_workers()
        placement = self.fair.place(self.redis, account_id, cost.run_s)
        return Quote(
            request=request,
            cost=cost,
            calibrated_on=samples,
            queue_position=placement.position,
            live_workers=workers,
            estimated_wait_s=self.start_in_s(placement.position, workers, now),
            budget=self.budgets.balance(account_id, now),
        )

    def start_in_s(self, position: int, workers: int | None = None, now: float | None = None) -> float | None:
        """Seconds until a job with `position` jobs ahead of it starts, by their quotes and the running
        jobs' progress; None while no worker is live."""
        workers = self.live_workers() if workers is None else workers
        if workers == 0:
            return None
        moment = time.time() if now is None else now
        running = [
            left
            for record in self.store.get_many(sorted(self.layout.taken()))
            if (left := run_left_s(record, moment)) is not None
        ]
        return start_in_s(running, self.fair.costs_ahead(self.redis, position), workers)

    def _parse(self, params: Mapping[str, Any]) -> GenerationRequest:
        return GenerationRequest.parse(
            {name: value for name, value in params.items() if name not in WEBHOOK_FIELDS},
            self.settings.limits,
            self.count_tokens,
        )

    def submit(
        self,
        account_id: str,
        params: Mapping[str, Any],
        address: str | None = None,
        options: SubmitOptions | None = None,
    ) -> JobRecord:
        """Validate `params`, then record a PENDING job and enqueue it in one Redis transaction.

        `address` is the client's (see guests.address_group). Raises InvalidRequest when a parameter breaks
        a rule, and TooBusy when the queue is full or the account, or its address, is over a limit; either
        way nothing is enqueued. With an idempotency key already used by this account within a day, returns
        that submit's job (and enqueues nothing), or raises IdempotencyConflict if its parameters differed.
        """
        return self._submit(account_id, params, address, options)[0]

    def sweep(
        self,
        account_id: str,
        params: Mapping[str, Any],
        address: str | None = None,
        options: SubmitOptions | None = None,
    ) -> list[JobRecord]:
        """Queue one request at several seeds (`count` or `seeds` beside its parameters, sweeps.parse_sweep)
        as one batch: all of its jobs or none, each counted by every limit as a submit of its own."""
        swept = parse_sweep(params)
        return self._submit(account_id, swept.params, address, options, seeds=swept.seeds, digest_of=params)

    def _submit(
        self,
        account_id: str,
        params: Mapping[str, Any],
        address: str | None,
        options: SubmitOptions | None,
        *,
        seeds: list[int] | None = None,
        digest_of: Mapping[str, Any] | None = None,
    ) -> list[JobRecord]:
        """The jobs of one submit (`seeds`: a sweep's, one job each; None: one job), enqueued together or not at all."""
        options = options or SubmitOptions()
        webhook = subscription(params, self.settings.webhook_allow_private)
        request = self._parse(params if seeds is None else {**params, "seed": seeds[0]})
        if webhook is not None and WebhookSecrets(self.redis).get(account_id) is None:
            raise InvalidRequest(
                {"webhook_url": "this account has no webhook secret yet: an operator makes one with "
                 "`python -m mochi_app accounts webhook-secret NAME` (deliveries are signed with it)"}
            )  # fmt: skip
        once = options.checked_key()
        cancel_after_s = options.cancel_after_s()
        now = time.time()
        batch_id = None if seeds is None else str(uuid.uuid4())
        requests = [request] if seeds is None else [request.model_copy(update={"seed": seed}) for seed in seeds]
        quote = self.estimate(request)[0]  # the seed changes nothing it costs: one quote serves every seed
        records = [
            JobRecord(
                job_id=str(uuid.uuid4()),
                account_id=account_id,
                queue_name=self.settings.queue_name,
                address=None if address is None else address_group(address),
                request=each,
                num_frames=each.rendered_num_frames,
                created_at=now + index * BATCH_STEP_S,
                progress=Progress(total=each.num_inference_steps),
                deadline=None if cancel_after_s is None else now + cancel_after_s,
                webhook=webhook,
                quote=quote,
                batch_id=batch_id,
            )
            for index, each in enumerate(requests)
        ]
        claim = None if once is None else (idempotency_key(account_id, once), _body_digest(digest_of or params))
        if claim is not None and (earlier := self._earlier_submit(self.redis, *claim)) is not None:
            return earlier  # a retry: no second job, and no submit counted
        self._count_submit(account_id, len(records))
        for attempt in range(SUBMIT_RETRIES):
            with self.redis.pipeline() as pipe:
                try:
                    stored = self._enqueue_fairly(pipe, records, claim)
                except WatchError:
                    # Submitters that collided retry at random moments, so the same ones do not collide again.
                    time.sleep(random.uniform(0, RETRY_JITTER_S * (attempt + 1)))
                    continue
                break
        else:
            raise TooBusy("the queue is too busy to take the job right now; try again in a moment", 1)
        if stored is records:
            for record in records:
                log.info("job %s submitted for account %s", record.job_id, account_id, extra={"job_id": record.job_id})
        return stored

    def _earlier_submit(self, reader: Redis | Pipeline, key: str, digest: str) -> list[JobRecord] | None:
        """The jobs an earlier submit with this idempotency key made, if any (IdempotencyConflict if its
        parameters were not these)."""
        raw = reader.get(key)
        if raw is None:
            return None
        claimed = json.loads(raw)
        if claimed["body"] != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used within the last 24 h for a submit with other parameters; "
                "use a new key for a new request"
            )
        job_ids = claimed.get("job_ids") or [claimed["job_id"]]  # "job_id": a claim written before sweeps
        raws = cast(list[bytes | None], reader.mget([job_key(job_id) for job_id in job_ids]))
        earlier = [JobRecord.model_validate_json(found) for found in raws if found is not None]
        return earlier or None  # deleted since: the key names nothing any more

    def _enqueue_fairly(
        self, pipe: Pipeline, records: list[JobRecord], claim: tuple[str, str] | None = None
    ) -> list[JobRecord]:
        """Record and enqueue one account's jobs in one transaction, each in its fair place; returns the
        jobs stored.

        WATCHes the queue, so a worker taking a job meanwhile makes the caller retry; the account's last
        tag and balance, so two racing submits of one account cannot both spend them; and the idempotency
        key, so of two racing submits with one key exactly one makes jobs and the other returns them.
        """
        first = records[0]
        account_id = first.account_id
        watched = [self.layout.waiting_key, self.fair.last_tag_key(account_id), *self.budgets.watched(account_id)]
        pipe.watch(*watched, *([claim[0]] if claim else []))  # type: ignore[no-untyped-call]
        if claim is not None and (earlier := self._earlier_submit(pipe, *claim)) is not None:
            pipe.reset()
            return earlier
        mine_key = self.fair.account_key(account_id)
        here_key = self._address_key(first)
        mine, mine_gone = self.fair.waiting_in(pipe, mine_key)
        here, here_gone = self.fair.waiting_in(pipe, here_key) if here_key else (0, [])
        costs = [record.quote.run_s if record.quote else 0.0 for record in records]
        try:
            self._check_room(first, len(records), int(pipe.llen(self.layout.waiting_key)), mine, here)
            self.budgets.check(account_id, sum(costs), time.time(), pipe, jobs=len(records))
        except Exception:
            # Refuse only on what was true all along: an empty transaction fails (WatchError, so the caller
            # reads again) if a racing submit changed the queue or made this key's job since we looked.
            pipe.multi()
            pipe.execute()
            raise
        placements: list[Placement] = []
        for cost_s in costs:  # each after the one before: a sweep waits as that many submits in a row would
            after = placements[-1].finish if placements else None
            placements.append(self.fair.place(pipe, account_id, cost_s, after))
        pipe.multi()  # RQ expects a transaction already open when handed a pipeline
        for record, placement in zip(records, placements, strict=True):
            self.store.create(record, pipe)
            self.push(pipe, record.job_id)
            if placement.pivot is not None:
                self.layout.move_before(pipe, record.job_id, placement.pivot)
            self.fair.add(pipe, record, placement, here_key)
            self.budgets.hold(pipe, record)
        self.fair.drop(pipe, mine_key, mine_gone)
        if here_key:
            self.fair.drop(pipe, here_key, here_gone)
        if claim is not None:
            job_ids = [record.job_id for record in records]
            pipe.set(claim[0], json.dumps({"body": claim[1], "job_ids": job_ids}), ex=IDEMPOTENCY_TTL_S)
        pipe.execute()
        return records

    def push(self, pipe: Pipeline, job_id: str, at_front: bool = False) -> None:
        """The RQ job for `job_id`, inside the caller's open transaction."""
        self.rq.enqueue(
            RENDER_TASK,
            job_id,
            job_id=job_id,
            job_timeout=self.settings.job_timeout_s,
            result_ttl=0,  # the job record is the result; RQ's copy would only duplicate it
            failure_ttl=FAILURE_TTL_S,
            description=f"render {job_id}",
            at_front=at_front,
            pipeline=pipe,
        )
        if at_front:
            self.fair.untag(pipe, job_id)

    def _address_key(self, record: JobRecord) -> str | None:
        """The index of the jobs waiting from the job's address, if it counts against its address's limit:
        jobs of accounts anyone can make do."""
        if record.address is None or not record.account_id.startswith(FREE_ACCOUNT_PREFIXES):
            return None
        return self.fair.address_key(record.address)

    def _check_room(self, record: JobRecord, adding: int, waiting: int, mine: int, here: int) -> None:
        """TooBusy when `adding` more jobs would overfill the queue (`waiting` jobs), or the account (`mine`)
        or, for accounts anyone can make, its address (`here`)."""
        settings = self.settings
        more = "" if adding == 1 else f" and these {adding} would make {{total}}"
        if waiting + adding > settings.max_queued_jobs:
            raise TooBusy(
                f"the queue is full: {waiting} jobs are waiting{more.format(total=waiting + adding)}, and it takes "
                f"at most {settings.max_queued_jobs}. Try again in a few minutes.",
                retry_after_s=60,
            )
        if mine + adding > settings.max_pending_jobs:
            raise TooBusy(
                f"you have {mine} jobs waiting{more.format(total=mine + adding)}; the limit is "
                f"{settings.max_pending_jobs} per account. Wait for one to start, or cancel one.",
                retry_after_s=5,
            )
        if self._address_key(record) is not None and here + adding > settings.max_pending_jobs_per_address:
            raise TooBusy(
                f"{here} jobs from your address are waiting{more.format(total=here + adding)}; the limit is "
                f"{settings.max_pending_jobs_per_address} per address for guests. Wait for one to start, or "
                "sign in with an API key.",
                retry_after_s=5,
            )

    def _count_submit(self, account_id: str, jobs: int = 1) -> None:
        """At most `submits_per_minute` submits per account in each minute (a sweep counts one per job)."""
        limit = self.settings.submits_per_minute
        if retry_after_s := wait_s(self.redis, lambda window: rate_key(account_id, window), RATE_WINDOW_S, limit, jobs):
            raise TooBusy(
                f"at most {self.settings.submits_per_minute} submits a minute per account; "
                f"try again in {retry_after_s} s",
                retry_after_s,
            )

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
            log.info("job %s: cancel requested (%s)", job_id, record.status, extra={"job_id": job_id})
        return record

    def cancel_overdue(self, now: float | None = None) -> int:
        """End every waiting job past its Cancel-After deadline as CANCELLED, with the reason; returns how many.

        A worker also refuses one as it takes it; this ends those that would otherwise wait on in a long queue.
        """
        moment = time.time() if now is None else now
        overdue = [
            record.job_id
            for record in self.store.get_many(self.layout.waiting(self.redis))
            if record.deadline is not None and record.deadline < moment and record.status is JobStatus.PENDING
        ]

        def expire(record: JobRecord) -> JobRecord | None:
            if record.status is not JobStatus.PENDING:
                return None
            return past_deadline(record, moment)

        for job_id in overdue:
            if (ended := self.store.update(job_id, expire)) is not None and ended.status is JobStatus.CANCELLED:
                self._drop_from_queue(job_id)
        return len(overdue)

    def position(self, job_id: str) -> int | None:
        """How many jobs are ahead of this one in the queue; None if it is not waiting."""
        return self.rq.get_job_position(job_id)

    def depth(self) -> int:
        """How many jobs are waiting."""
        return self.rq.count

    def live_workers(self) -> int:
        """Workers registered on this queue whose heartbeat is current. RQ's own registration outlives a
        dead or frozen worker by up to 7 minutes; our heartbeat lapses after MOCHI_HEARTBEAT_TTL_S."""
        names = [key.removeprefix(Worker.redis_worker_namespace_prefix) for key in Worker.all_keys(self.redis, self.rq)]
        return int(self.redis.exists(*map(heartbeat_key, names))) if names else 0

    def _drop_from_queue(self, job_id: str) -> None:
        # The record already says CANCELLED, so a worker that dequeued the job first skips it.
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
            cancel_job(job_id, connection=self.redis, serializer=JSONSerializer)
