"""The worker process: load the model once, warm it, then take jobs one at a time in this process."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from mochi_app.config import Settings
from mochi_app.connections import connect
from mochi_app.costs import profile_name
from mochi_app.liveness import Heartbeat
from mochi_app.loader import load_renderer
from mochi_app.logs import job_logging
from mochi_app.maintenance import start_maintenance
from mochi_app.queue import JobQueue, rq_queue
from mochi_app.recovery import Recovery
from mochi_app.renderer import MochiRenderer
from mochi_app.runner import GracefulStop, JobRunner
from mochi_app.served_model import publish_served_model
from mochi_app.stages import Stage
from mochi_app.storage import VideoStorage, open_storage
from mochi_app.tasks import install_runner
from mochi_app.video import ffmpeg_exe
from mochi_app.worker_state import StartupReporter, WorkerStates

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GracefulWorker(SimpleWorker):
    """RQ's in-process worker, whose warm stop (SIGTERM, Ctrl-C) also starts the job's grace period,
    and which keeps a job that went back on the queue while it ran waiting there."""

    def __init__(self, *args: object, jobs: JobQueue, stop: GracefulStop, ready: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.jobs = jobs
        self.graceful_stop = stop
        self.ready = ready

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """Register with RQ, then say `ready`: from that line on, /healthz counts this worker."""
        super().bootstrap(*args, **kwargs)
        log.info("%s", self.ready)

    def execute_job(self, job: Job, queue: Queue) -> None:
        with job_logging(job.id):  # RQ's own lines about the job carry its id too
            super().execute_job(job, queue)
            try:
                Recovery(self.jobs).restore(job.id)
            except RedisError as exc:  # nothing else would put the job back: say so loudly
                log.error("job %s: could not check it is still queued (%s)", job.id, exc)

    def handle_warm_shutdown_request(self) -> None:
        self.graceful_stop.request()
        log.warning(
            "worker %s: stopping; a job in progress gets %.0f s to finish, then goes back on the queue",
            self.name,
            self.graceful_stop.grace_s,
        )


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Serve jobs until stopped (or, with `burst`, until the queue is empty); every stage of the start
    is published in Redis (WorkerStates) for the page and /healthz, failures included."""
    redis = connect(settings)
    name = worker_id()
    states = WorkerStates(redis, settings.queue_name, settings.heartbeat_ttl_s)
    states.forget_failed(socket.gethostname())
    reporter = StartupReporter(states, name)
    reporter.start()
    try:
        videos = open_storage(settings)
        renderer = _start(settings, reporter, videos)
        profile = profile_name(renderer.model_name, renderer.made_with)
        publish_served_model(
            redis, settings.queue_name, renderer.model_name, renderer.is_tiny, renderer.tokenizer_json(), profile
        )
        reporter(Stage.READY, f"{renderer.model_name} on {renderer.device}")
        _serve(settings, redis, renderer, videos, name, burst=burst)
    finally:
        reporter.stop()


def _start(settings: Settings, reporter: StartupReporter, videos: VideoStorage) -> MochiRenderer:
    """Check where videos go (before minutes of loading), load and warm the model; a failure is published
    with its reason before it propagates."""
    try:
        videos.check()
        # No attempt lives past the job time limit: older staged files are a killed worker's leftovers.
        if swept := videos.sweep(older_than_s=settings.job_timeout_s + settings.stop_grace_s):
            log.info("removed %d video file(s) that killed attempts left behind", swept)
        renderer = load_renderer(settings, reporter)
        ffmpeg_exe()  # found and checked now, not during the first job (see ffmpeg_exe)
        if settings.warmup:
            log.info("warm-up render took %.1f s", renderer.warm_up(reporter))
    except Exception as exc:
        reporter(Stage.FAILED, str(exc) or type(exc).__name__)
        raise
    return renderer


def _serve(
    settings: Settings, redis: Redis, renderer: MochiRenderer, videos: VideoStorage, name: str, *, burst: bool
) -> None:
    jobs = JobQueue(redis, settings)
    stop = GracefulStop(grace_s=settings.stop_grace_s)
    runner = JobRunner(queue=jobs, renderer=renderer, settings=settings, videos=videos, worker_id=name, stop=stop)
    install_runner(runner)
    heartbeat = Heartbeat(redis, name, settings.heartbeat_ttl_s)
    heartbeat.start()
    # Every worker also runs the chores (reaping lost jobs first): a fleet needs no separate process.
    stop_maintenance = start_maintenance(jobs, videos)
    # SimpleWorker runs each job in this process: no fork, so the loaded model (and a CUDA
    # context, which does not survive fork) serves every job.
    ready = f"worker {name} ready on queue {settings.queue_name!r} with model {renderer.model_name}"
    worker = GracefulWorker(
        [rq_queue(redis, settings)],
        connection=redis,
        serializer=JSONSerializer,
        name=name,
        jobs=jobs,
        stop=stop,
        ready=ready,
    )
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        for chore in stop_maintenance:
            chore.set()
        heartbeat.stop()
