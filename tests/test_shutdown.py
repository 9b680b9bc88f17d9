"""Stopping: a worker finishes its job within the grace period or gives it back; app.py passes SIGTERM on."""

from __future__ import annotations

import re
import signal
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.video import job_videos
from tests.harness import SLOW, SMALL, Children, finished, new_account, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

ENDED = {status.value for status in JobStatus if status.is_terminal}


def started(queue: JobQueue, job_id: str) -> JobRecord | None:
    record = queue.store.get(job_id)
    return record if record is not None and record.progress.step > 0 else None


def test_sigterm_lets_the_current_job_finish_within_the_grace_period(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    worker = children.worker(replace(settings, stop_grace_s=120), tmp_path / "worker.log")
    job = job_queue.submit(new_account(), {"prompt": "finish me", **SMALL, "num_inference_steps": 40})
    wait_for(lambda: started(job_queue, job.job_id), 60, "the job to start", interval_s=0.005)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(120) == 0, worker.log
    done = job_queue.store.get(job.job_id)
    assert done is not None and (done.status, done.attempts) == (JobStatus.COMPLETED, 1)


def test_a_job_still_running_when_the_grace_period_ends_goes_back_to_the_front_uncounted(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    stopping = children.worker(replace(settings, stop_grace_s=1), tmp_path / "stopping.log")
    owner = new_account()
    job = job_queue.submit(owner, {"prompt": "too long to wait for", **SLOW})
    waiting = job_queue.submit(owner, {"prompt": "next in line", **SMALL})
    wait_for(lambda: started(job_queue, job.job_id), 60, "the job to start")
    stopping.process.send_signal(signal.SIGTERM)
    assert stopping.process.wait(60) == 0, stopping.log

    given_back = job_queue.store.get(job.job_id)
    assert given_back is not None
    assert (given_back.status, given_back.attempts, given_back.worker_id) == (JobStatus.PENDING, 0, None)
    assert job_queue.rq.job_ids == [job.job_id, waiting.job_id]
    assert not job_videos(settings.videos_dir, job.job_id)

    children.worker(settings, tmp_path / "next.log")
    done = finished(job_queue, job.job_id)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 1)


@pytest.mark.timeout(900)  # the job renders twice, through app.py's web and worker, on what may be a loaded machine
def test_app_py_passes_sigterm_on_and_the_given_back_job_completes_after_a_restart(
    tmp_path: Path, children: Children
) -> None:
    app = children.app(tmp_path, MOCHI_WARMUP="0", MOCHI_STOP_GRACE_S="1")
    job = httpx.post(f"{app.url}/generate", json={"prompt": "across a restart", **SLOW}).json()
    wait_for(
        lambda: httpx.get(f"{app.url}/status/{job['job_id']}").json()["progress"]["step"] > 0, 60, "the job to start"
    )
    app.child.process.send_signal(signal.SIGTERM)
    assert app.child.process.wait(90) == 0, app.child.log
    assert re.search(r"job \S+: worker \S+ stopping; the job is now PENDING", app.child.log)

    again = children.app(tmp_path, MOCHI_WARMUP="0")  # the same data folder: the same queue and records
    done = wait_for(
        lambda: (s := httpx.get(f"{again.url}/status/{job['job_id']}").json())["status"] in ENDED and s,
        600,
        "the job to end after the restart",
    )
    assert done["status"] == "COMPLETED", done  # type: ignore[index]
    assert done["model"] == "tiny"  # type: ignore[index]
