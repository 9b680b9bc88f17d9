"""Worker liveness: heartbeats, and jobs whose worker died are re-queued once, then FAILED "worker lost"."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.serializers import JSONSerializer

from mochi_app.config import Settings
from mochi_app.liveness import Heartbeat, Reaper, heartbeat_key, reap_lost_jobs, server_uptime_s
from mochi_app.loader import load_renderer
from mochi_app.queue import WORKER_LOST, JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.recovery import Recovery
from mochi_app.runner import JobRunner
from mochi_app.storage import open_storage
from mochi_app.tokens import TokenCounter
from mochi_app.video import job_videos
from tests.harness import SLOW, SMALL, Children, finished, new_account, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


def running_on(job_queue: JobQueue, job_id: str, worker_id: str, attempts: int) -> None:
    """Mark a job as taken by `worker_id`, as a worker's JobRunner does."""

    def start(record: JobRecord) -> JobRecord:
        update = {"status": JobStatus.RUNNING, "worker_id": worker_id, "attempts": attempts, "started_at": time.time()}
        return record.model_copy(update=update)

    job_queue.store.update(job_id, start)
    job_queue.rq.remove(job_id)


def test_a_heartbeat_expires_unless_renewed(redis: Redis) -> None:
    heartbeat = Heartbeat(redis, "beating-worker", ttl_s=2)
    heartbeat.beat()
    assert 0 < redis.ttl(heartbeat_key("beating-worker")) <= 2
    heartbeat.stop()
    assert not redis.exists(heartbeat_key("beating-worker"))


def test_a_lost_job_goes_back_to_the_front_once_then_fails(
    settings: Settings, redis: Redis, count_tokens: TokenCounter
) -> None:
    job_queue = JobQueue(redis, replace(settings, heartbeat_ttl_s=2), count_tokens)
    wait_for(lambda: server_uptime_s(redis) >= 2, 30, "the server to be up for a heartbeat TTL")
    waiting = job_queue.submit(new_account(), {"prompt": "waiting", **SMALL})
    lost = job_queue.submit(new_account(), {"prompt": "lost", **SMALL})
    running_on(job_queue, lost.job_id, "ghost-1", attempts=1)
    Heartbeat(redis, "alive-1", ttl_s=30).beat()
    alive = job_queue.submit(new_account(), {"prompt": "fine", **SMALL})
    running_on(job_queue, alive.job_id, "alive-1", attempts=1)

    assert [record.job_id for record in reap_lost_jobs(job_queue)] == [lost.job_id]
    requeued = job_queue.store.get(lost.job_id)
    assert requeued is not None and requeued.status is JobStatus.PENDING and requeued.worker_id is None
    assert job_queue.rq.job_ids == [lost.job_id, waiting.job_id]
    assert job_queue.store.get(alive.job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]

    running_on(job_queue, lost.job_id, "ghost-2", attempts=2)
    reap_lost_jobs(job_queue)
    failed = job_queue.store.get(lost.job_id)
    assert failed is not None and (failed.status, failed.error) == (JobStatus.FAILED, WORKER_LOST)
    assert lost.job_id not in job_queue.store.running_ids()
    # The server is shared: a RUNNING job left behind would be reaped, onto its queue, by a later test's reaper.
    job_queue.store.delete(alive.job_id, alive.account_id)


def test_a_reaper_leaves_another_queues_lost_job_to_that_queue(
    settings: Settings, redis: Redis, count_tokens: TokenCounter
) -> None:
    """Queues may share one server (a fleet's, or every test's): a job is put back on the queue it came from."""
    mine = JobQueue(redis, replace(settings, heartbeat_ttl_s=2), count_tokens)
    theirs = JobQueue(redis, replace(settings, heartbeat_ttl_s=2, queue_name=f"{settings.queue_name}-b"), count_tokens)
    wait_for(lambda: server_uptime_s(redis) >= 2, 30, "the server to be up for a heartbeat TTL")
    lost = theirs.submit(new_account(), {"prompt": "lost on the other queue", **SMALL})
    assert lost.queue_name == theirs.settings.queue_name
    running_on(theirs, lost.job_id, "ghost-b", attempts=1)
    assert lost.job_id not in [record.job_id for record in reap_lost_jobs(mine)]
    assert mine.rq.job_ids == [] and mine.store.get(lost.job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert lost.job_id in [record.job_id for record in reap_lost_jobs(theirs)]
    assert theirs.rq.job_ids == [lost.job_id]
    theirs.cancel(lost.job_id)


def test_a_sigkilled_workers_job_completes_on_the_next_worker(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    first = children.worker(settings, tmp_path / "first.log", MOCHI_HEARTBEAT_TTL_S="2")
    job = job_queue.submit(new_account(), {"prompt": "survives a crash", **SLOW})
    wait_for(lambda: (r := job_queue.store.get(job.job_id)) and r.progress.step > 0, 60, "the job to start")
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    second = children.worker(settings, tmp_path / "second.log", MOCHI_HEARTBEAT_TTL_S="2")
    done = finished(job_queue, job.job_id)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 2)
    assert done.worker_id == f"{os.uname().nodename}-{second.process.pid}"


def test_a_job_whose_worker_dies_twice_fails_worker_lost(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    job = job_queue.submit(new_account(), {"prompt": "unlucky", **SLOW})
    for attempt in (1, 2):
        worker = children.worker(settings, tmp_path / f"worker-{attempt}.log", MOCHI_HEARTBEAT_TTL_S="2")
        wait_for(
            lambda: (r := job_queue.store.get(job.job_id)) and r.attempts == attempt and r.progress.step > 0,  # noqa: B023
            60,
            f"attempt {attempt} to start",
        )
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
    children.worker(settings, tmp_path / "reaper.log", MOCHI_HEARTBEAT_TTL_S="2")
    failed = finished(job_queue, job.job_id, timeout_s=30)
    assert (failed.status, failed.error, failed.attempts) == (JobStatus.FAILED, WORKER_LOST, 2)


def test_a_worker_whose_job_was_given_away_stops_without_overwriting_it(
    settings: Settings, job_queue: JobQueue
) -> None:
    renderer = load_renderer(settings)
    runner = JobRunner(
        queue=job_queue,
        renderer=renderer,
        settings=settings,
        videos=open_storage(settings),
        worker_id="slow-but-alive",
    )
    job = job_queue.submit(new_account(), {"prompt": "given away", **SLOW})
    job_queue.rq.remove(job.job_id)  # this test plays the worker itself
    thread = threading.Thread(target=runner.run, args=(job.job_id,))
    thread.start()
    wait_for(lambda: (r := job_queue.store.get(job.job_id)) and r.progress.step > 0, 60, "the job to start")
    Recovery(job_queue).recover(job.job_id, "slow-but-alive")  # as the reaper does when a heartbeat lapses
    thread.join(60)
    assert not thread.is_alive()
    record = job_queue.store.get(job.job_id)
    assert record is not None and (record.status, record.worker_id, record.error) == (JobStatus.PENDING, None, None)
    assert job_queue.rq.job_ids == [job.job_id]
    assert not job_videos(settings.videos_dir, job.job_id)


def test_a_job_taken_by_a_worker_that_died_before_starting_it_goes_back_a_round_later(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    job = job_queue.submit(new_account(), {"prompt": "dropped in the handover", **SMALL})
    taken = Queue.dequeue_any([job_queue.rq], None, connection=job_queue.redis, serializer=JSONSerializer)
    assert taken is not None and taken[0].id == job.job_id  # as a worker does, which then dies
    assert job_queue.rq.job_ids == []

    reaper = Reaper(job_queue)
    reaper()
    assert job_queue.rq.job_ids == []  # a live worker would have marked it RUNNING by the next round
    reaper()
    assert job_queue.rq.job_ids == [job.job_id]
    assert IntermediateQueue(job_queue.rq.key, job_queue.redis).get_job_ids() == []

    children.worker(settings, tmp_path / "worker.log")
    assert finished(job_queue, job.job_id).status is JobStatus.COMPLETED
