"""What the submit benchmarks share: a queue on its own embedded server, one timed probe, the summary figures."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from redis import Redis

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus, Progress
from mochi_app.redis_server import EmbeddedServer
from mochi_app.schemas import GenerationRequest
from mochi_app.tokens import TokenCounter

PARAMS = {"prompt": "a cat walks on the beach", "num_frames": 31, "height": 96, "width": 160}


@contextmanager
def embedded_settings(directory: Path, appendfsync: str = "always") -> Iterator[Settings]:
    """Tiny-model settings on a fresh EmbeddedServer under `directory`; the server stops on exit."""
    server = EmbeddedServer(directory / "redis", appendfsync=appendfsync)
    try:
        yield Settings(data_dir=directory, redis_url=server.start(), model="tiny")
    finally:
        server.stop()


@contextmanager
def embedded_queue(directory: Path, appendfsync: str = "always") -> Iterator[JobQueue]:
    """A JobQueue on a fresh EmbeddedServer under `directory`; the server stops on exit."""
    with embedded_settings(directory, appendfsync) as base:
        # A backlog comes from a few accounts and every probe is a submit: no limit may refuse one.
        settings = replace(base, max_pending_jobs=10_000, submits_per_minute=1_000_000, max_queued_jobs=100_000)
        with Redis.from_url(base.redis_url or "") as redis:
            yield JobQueue(redis, settings, TokenCounter.tiny())


def probe_ms(queue: JobQueue, account_id: str, then: Callable[[JobQueue], None] | None = None) -> float:
    """Milliseconds for one submit, and `then` if given; the probe leaves the queue again afterwards."""
    started = time.perf_counter()
    record = queue.submit(account_id, PARAMS)
    if then is not None:
        then(queue)
    elapsed_ms = (time.perf_counter() - started) * 1000
    queue.rq.remove(record.job_id)  # keep the depth as it was, and leave no job that seems to wait
    queue.cancel(record.job_id)
    return elapsed_ms


def summary(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p90 and max, rounded to 0.01 ms."""
    p90 = statistics.quantiles(latencies_ms, n=10, method="inclusive")[-1] if len(latencies_ms) > 1 else latencies_ms[0]
    return {
        "p50_ms": round(statistics.median(latencies_ms), 2),
        "p90_ms": round(p90, 2),
        "max_ms": round(max(latencies_ms), 2),
    }


def completed_record(account_id: str, request: GenerationRequest, finished_at: float) -> JobRecord:
    """A COMPLETED job's record as a worker leaves it, to write straight to the store (no worker runs)."""
    steps = request.num_inference_steps
    return JobRecord(
        job_id=str(uuid.uuid4()),
        account_id=account_id,
        status=JobStatus.COMPLETED,
        request=request,
        num_frames=request.rendered_num_frames,
        created_at=finished_at - 2,
        started_at=finished_at - 1,
        finished_at=finished_at,
        progress=Progress(step=steps, total=steps),
    )
