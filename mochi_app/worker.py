"""The worker process: load the model once, warm it, then take jobs one at a time in this process."""

from __future__ import annotations

import logging
import os
import socket

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from mochi_app.config import Settings
from mochi_app.generator import load_renderer
from mochi_app.liveness import Heartbeat, reap_lost_jobs, run_every
from mochi_app.model_card import publish_model_card
from mochi_app.queue import JobQueue, rq_queue
from mochi_app.redis_server import connect
from mochi_app.store import JobStore
from mochi_app.tasks import JobRunner, install_runner

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Serve jobs until stopped (or, with `burst`, until the queue is empty)."""
    redis = connect(settings)
    renderer = load_renderer(settings)
    if settings.warmup:
        log.info("warm-up render took %.1f s", renderer.warm_up())
    publish_model_card(redis, settings.queue_name, renderer.model_name, renderer.is_tiny, renderer.tokenizer_json())
    name = worker_id()
    install_runner(
        JobRunner(
            store=JobStore(redis),
            renderer=renderer,
            settings=settings,
            worker_id=name,
        )
    )
    heartbeat = Heartbeat(redis, name, settings.heartbeat_ttl_s)
    heartbeat.start()
    # Every worker also looks for jobs whose worker died: a fleet needs no separate reaper process.
    jobs = JobQueue(redis, settings)
    stop_reaping = run_every(settings.heartbeat_ttl_s / 2, lambda: reap_lost_jobs(jobs), "reaper")
    # SimpleWorker runs each job in this process: no fork, so the loaded model (and a CUDA
    # context, which does not survive fork) serves every job.
    worker = SimpleWorker([rq_queue(redis, settings)], connection=redis, serializer=JSONSerializer, name=name)
    log.info("worker %s ready on queue %r with model %s", name, settings.queue_name, renderer.model_name)
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        stop_reaping.set()
        heartbeat.stop()
