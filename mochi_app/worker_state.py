"""Each worker's start-up state (downloading, loading, warming up, ready, failed) in Redis, for the web to show."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from pydantic import BaseModel, ValidationError
from redis import Redis
from redis.exceptions import RedisError

from mochi_app.liveness import run_every
from mochi_app.stages import DownloadProgress, Stage

log = logging.getLogger(__name__)

FAILED_TTL_S = 24 * 3600  # why a worker could not start stays on the page this long after it exits
LOG_EVERY_S = 10.0  # the console hears download progress this often


class WorkerState(BaseModel):
    worker_id: str
    stage: Stage
    detail: str | None = None  # what the stage is doing, or why the worker failed
    download: DownloadProgress | None = None
    updated_at: float

    def describe(self) -> str:
        """One line for the console, /healthz and the page: `downloading: fetching ... (1.2 GB of 40 GB ...)`."""
        text = self.stage.replace("_", " ")
        if self.detail:
            text += f": {self.detail}"
        if self.download is not None:
            text += f" ({self.download.describe()})"
        return text


def state_key(queue_name: str, worker_id: str) -> str:
    return f"worker-state:{queue_name}:{worker_id}"


def states_key(queue_name: str) -> str:
    return f"worker-states:{queue_name}"


class WorkerStates:
    """The states of one queue's workers: each in a key that lapses unless its worker refreshes it."""

    def __init__(self, redis: Redis, queue_name: str, ttl_s: int) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.ttl_s = ttl_s

    def publish(self, state: WorkerState) -> None:
        ttl_s = FAILED_TTL_S if state.stage is Stage.FAILED else self.ttl_s
        with self.redis.pipeline() as pipe:
            pipe.set(state_key(self.queue_name, state.worker_id), state.model_dump_json(), ex=ttl_s)
            pipe.sadd(states_key(self.queue_name), state.worker_id)
            pipe.execute()

    def remove(self, worker_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(state_key(self.queue_name, worker_id))
            pipe.srem(states_key(self.queue_name), worker_id)
            pipe.execute()

    def all(self) -> list[WorkerState]:
        """Every worker's state, oldest update first; workers whose key lapsed are forgotten."""
        members = self.redis.smembers(states_key(self.queue_name))
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        if not ids:
            return []
        raws = self.redis.mget([state_key(self.queue_name, worker_id) for worker_id in ids])
        states, gone = [], []
        for worker_id, raw in zip(ids, raws, strict=True):
            state = _parse(raw)
            if state is None:
                gone.append(worker_id)
            else:
                states.append(state)
        if gone:
            self.redis.srem(states_key(self.queue_name), *gone)
        return sorted(states, key=lambda state: state.updated_at)

    def forget_failed(self, host: str) -> None:
        """Drop the failures of earlier workers on `host`: a new worker there is trying again."""
        for state in self.all():
            if state.stage is Stage.FAILED and state.worker_id.startswith(f"{host}-"):
                self.remove(state.worker_id)


def headline(states: list[WorkerState]) -> WorkerState | None:
    """The state that says why no worker takes jobs: the newest of those starting, else the newest
    failure; None when a worker is ready, or none has said anything (states are oldest first)."""
    if any(state.stage is Stage.READY for state in states):
        return None
    starting = [state for state in states if state.stage.is_starting]
    failed = [state for state in states if state.stage is Stage.FAILED]
    shown = starting or failed
    return shown[-1] if shown else None


def why_not_ready(states: list[WorkerState]) -> str | None:
    """Why no worker takes jobs yet, in a sentence for /healthz; None when one is ready."""
    if any(state.stage is Stage.READY for state in states):
        return None
    news = headline(states)
    if news is None:
        return "no worker has started yet"
    if news.stage is Stage.FAILED:
        return f"no worker could start: {news.detail}"
    return f"no worker is ready yet: {news.describe()}"


def _parse(raw: object) -> WorkerState | None:
    if not isinstance(raw, bytes | str):
        return None
    try:
        return WorkerState.model_validate_json(raw)
    except ValidationError:
        return None


class StartupReporter:
    """A worker's StageReport: logs each stage, keeps its state in Redis, and refreshes it until stopped.

    Redis trouble never stops a worker from starting: a state that cannot be written is logged and
    written again on the next refresh.
    """

    def __init__(self, states: WorkerStates, worker_id: str) -> None:
        self.states = states
        self.state = WorkerState(worker_id=worker_id, stage=Stage.STARTING, updated_at=time.time())
        # Held while a state is read and written, so the refresh thread can never write an older state
        # over a newer one (a FAILED over by the STARTING it had read), nor one after the worker left.
        self._lock = threading.Lock()
        self._stopped = False
        self._logged_at = 0.0
        self._refresh = threading.Event()

    def start(self) -> None:
        """Publish STARTING now, and the current state every third of the TTL from a thread of its own."""
        self._refresh = run_every(self.states.ttl_s / 3, self._publish, "worker-state")

    def __call__(self, stage: Stage, detail: str | None = None, download: DownloadProgress | None = None) -> None:
        changed = stage is not self.state.stage or detail != self.state.detail
        if download is not None:  # the console hears a download's first figures and its end at once
            changed = changed or self.state.download is None or download.done_bytes == download.total_bytes
        with self._lock:
            self.state = WorkerState(
                worker_id=self.state.worker_id, stage=stage, detail=detail, download=download, updated_at=time.time()
            )
        if changed or time.monotonic() - self._logged_at >= LOG_EVERY_S:
            self._logged_at = time.monotonic()
            log_line = log.error if stage is Stage.FAILED else log.info
            log_line("worker %s: %s", self.state.worker_id, self.state.describe())
        if stage is Stage.FAILED:
            self._refresh.set()  # kept for FAILED_TTL_S, then forgotten
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            if self._stopped:
                return
            state = self.state.model_copy(update={"updated_at": time.time()})
            try:
                self.states.publish(state)
            except RedisError as exc:
                log.warning("worker %s: could not publish its state (%s)", state.worker_id, exc)

    def stop(self) -> None:
        """The worker is leaving: its state goes with it, unless it failed."""
        self._refresh.set()
        with self._lock:
            self._stopped = True
            if self.state.stage is not Stage.FAILED:
                with contextlib.suppress(RedisError):  # else it lapses by itself within one TTL
                    self.states.remove(self.state.worker_id)
