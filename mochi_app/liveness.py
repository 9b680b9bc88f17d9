"""Worker liveness: a heartbeat beside the denoising loop, and the reaper of jobs whose worker is gone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from mochi_app.queue import JobQueue, heartbeat_key
from mochi_app.records import JobRecord, JobStatus
from mochi_app.recovery import Recovery

log = logging.getLogger(__name__)


def server_uptime_s(redis: Redis) -> int:
    return int(redis.info("server")["uptime_in_seconds"])


def run_every(interval_s: float, action: Callable[[], object], name: str) -> threading.Event:
    """Run `action` now and every `interval_s` in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                action()
            except RedisError as exc:  # Redis away for a moment: try again on the next beat
                log.warning("%s: %s", name, exc)
            except Exception:  # one bad record must not silence the heartbeat or the reaper for good
                log.exception("%s failed; trying again in %.0f s", name, interval_s)
            if stop.wait(interval_s):
                return

    threading.Thread(target=loop, name=name, daemon=True).start()
    return stop


class Heartbeat:
    """Proves a worker is alive with a key that expires `ttl_s` after the last beat.

    It beats from its own thread, so a long denoising step or VAE decode does not stop it; only a
    dead (or frozen) process does.
    """

    def __init__(self, redis: Redis, worker_id: str, ttl_s: int) -> None:
        self.redis = redis
        self.key = heartbeat_key(worker_id)
        self.ttl_s = ttl_s
        self._stop: threading.Event | None = None

    def beat(self) -> None:
        self.redis.set(self.key, str(time.time()), ex=self.ttl_s)

    def start(self) -> None:
        self._stop = run_every(self.ttl_s / 3, self.beat, "heartbeat")

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self.redis.delete(self.key)


def reap_lost_jobs(queue: JobQueue) -> list[JobRecord]:
    """Every RUNNING job of this queue whose worker's heartbeat has expired: re-queued once, then FAILED
    "worker lost"."""
    if server_uptime_s(queue.redis) < queue.settings.heartbeat_ttl_s:
        # Heartbeats expired while the server was down, though their workers may be fine: give
        # every worker one TTL to beat again before calling it lost.
        return []
    recovered = []
    for job_id in queue.store.running_ids():
        record = queue.store.get(job_id)
        if record is None or record.status is not JobStatus.RUNNING or record.worker_id is None:
            continue
        if record.queue_name not in {None, queue.settings.queue_name}:
            continue  # another queue's job on the same server: its own reapers put it back on its own queue
        if queue.redis.exists(heartbeat_key(record.worker_id)):
            continue
        after = Recovery(queue).recover(job_id, record.worker_id)
        if after is not None and after.status is not JobStatus.RUNNING:
            recovered.append(after)
    return recovered


class Reaper:
    """One reaper round after another: jobs whose worker is gone, then jobs a worker took off the
    queue but died before marking RUNNING (still waiting in RQ's hands a whole round later)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.suspects: set[str] = set()

    def __call__(self) -> list[JobRecord]:
        recovered = reap_lost_jobs(self.queue)
        recovery = Recovery(self.queue)
        suspects = recovery.taken_but_waiting()
        for job_id in sorted(suspects & self.suspects):
            recovery.requeue_waiting(job_id)
        self.suspects = suspects
        return recovered
