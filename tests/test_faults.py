"""Fault tests with real processes: the queue server killed and restarted, out-of-memory, pipeline errors, full disks.

Whatever breaks, an accepted job ends with a video or a clear reason, and the worker goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import imageio.v3 as iio
import pytest
from gradio_client import Client
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.errors import QUEUE_UNREACHABLE
from mochi_app.liveness import reap_lost_jobs
from mochi_app.queue import JobQueue
from mochi_app.records import JobStatus
from mochi_app.redis_server import EmbeddedServer
from mochi_app.tiny_model import ensure_tiny_model
from mochi_app.tokens import TokenCounter
from mochi_app.video import job_videos
from tests.faulty_worker import CUBLAS_ALLOC_CUE, OUT_OF_MEMORY_CUE, PIPELINE_ERROR_CUE
from tests.harness import SLOW, SMALL, Children, finished, new_account, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

TINIEST = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A queue server of this test's own, to kill and start again."""
    server = EmbeddedServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_settings(settings: Settings, own_server: EmbeddedServer) -> Settings:
    """The session's data (and tiny model) with this test's own server and a short heartbeat."""
    return replace(settings, redis_url=own_server.url, heartbeat_ttl_s=2)


@pytest.fixture
def own_queue(own_settings: Settings, count_tokens: TokenCounter) -> JobQueue:
    return JobQueue(Redis.from_url(own_settings.redis_url or ""), own_settings, count_tokens)


def kill_and_restart(server: EmbeddedServer, away_s: float = 0.0) -> None:
    """SIGKILL the server (no chance to flush anything), wait `away_s`, start it on the same data and address."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    time.sleep(away_s)
    server.start()


def status(url: str, job_id: str) -> dict[str, Any] | None:
    """The job as REST shows it, or None while the web process cannot reach the queue."""
    response = httpx.get(f"{url}/status/{job_id}", timeout=10)
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def test_jobs_accepted_just_before_the_server_is_killed_survive_in_order_and_complete(
    own_settings: Settings, own_server: EmbeddedServer, own_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    _, url = children.web(own_settings, tmp_path / "web.log")
    accepted = []
    for number in range(3):
        response = httpx.post(f"{url}/generate", json={"prompt": f"clip {number}", **SMALL})
        assert response.status_code == 202, response.text
        accepted.append(response.json()["job_id"])
    kill_and_restart(own_server)

    after = [wait_for(lambda job_id=job_id: status(url, job_id), 120, "the web to reconnect") for job_id in accepted]
    assert [(job["status"], job["queue_position"]) for job in after] == [  # type: ignore[index]
        ("PENDING", 0),
        ("PENDING", 1),
        ("PENDING", 2),
    ]
    children.worker(own_settings, tmp_path / "worker.log")
    done = [finished(own_queue, job_id) for job_id in accepted]
    assert [record.status for record in done] == [JobStatus.COMPLETED] * 3


def test_a_server_outage_mid_job_means_503s_then_recovery_with_the_video_kept(
    own_settings: Settings, own_server: EmbeddedServer, own_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    worker = children.worker(own_settings, tmp_path / "worker.log")
    _, url = children.web(own_settings, tmp_path / "web.log")
    client = Client(url, verbose=False)
    request = {"prompt": "through the outage", **SLOW, "num_inference_steps": 40}
    job = httpx.post(f"{url}/generate", json=request).json()
    wait_for(lambda: (s := status(url, job["job_id"])) and s["progress"]["step"] > 0, 60, "the job to start")
    assert own_server.process is not None
    own_server.process.kill()
    own_server.process.wait()

    # While the server is away: clear 503s on REST, a clear message on the Gradio API (and page).
    away = httpx.get(f"{url}/status/{job['job_id']}", timeout=10)
    assert (away.status_code, away.json()["detail"]) == (503, QUEUE_UNREACHABLE)
    assert "retry-after" in away.headers
    assert httpx.post(f"{url}/generate", json={"prompt": "refused"}, timeout=10).status_code == 503
    with pytest.raises(Exception, match="unreachable"):
        client.predict(job["job_id"], api_name="/status")
    # The worker renders on, then holds the finished video until it can record it.
    wait_for(lambda: "Redis unreachable (" in worker.log, 120, "the worker to finish rendering and wait")
    time.sleep(2 * own_settings.heartbeat_ttl_s)  # every heartbeat has expired by now
    own_server.start()

    done = wait_for(
        lambda: (s := status(url, job["job_id"])) and s["status"] == "COMPLETED" and s, 60, "the recorded result"
    )
    assert done["timings"]["total_s"] > 0  # type: ignore[index]
    record = own_queue.store.get(job["job_id"])
    assert record is not None and record.attempts == 1  # recorded, not rendered again
    video = httpx.get(f"{url}/download/{job['job_id']}")
    assert video.status_code == 200
    assert iio.imread(video.content, extension=".mp4").shape == (61, 256, 256, 3)

    after = httpx.post(f"{url}/generate", json={"prompt": "after the outage", **SMALL})
    assert after.status_code == 202
    assert finished(own_queue, after.json()["job_id"]).status is JobStatus.COMPLETED


def test_right_after_a_server_restart_the_reaper_gives_workers_one_heartbeat_ttl(
    own_server: EmbeddedServer, own_queue: JobQueue
) -> None:
    job = own_queue.submit(new_account(), {"prompt": "its worker's heartbeat expired with the server", **SMALL})
    own_queue.store.update(job.job_id, lambda r: r.model_copy(update={"status": JobStatus.RUNNING, "worker_id": "w"}))
    kill_and_restart(own_server)
    assert reap_lost_jobs(own_queue) == []  # the worker may be alive and about to beat again
    time.sleep(own_queue.settings.heartbeat_ttl_s)
    assert [record.job_id for record in reap_lost_jobs(own_queue)] == [job.job_id]


def test_out_of_memory_and_a_pipeline_error_fail_their_jobs_and_the_worker_goes_on(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    worker = children.worker(settings, tmp_path / "worker.log", module="tests.faulty_worker")
    owner = new_account()
    jobs = [
        job_queue.submit(owner, {"prompt": f"a storm {OUT_OF_MEMORY_CUE}", **SMALL}),
        job_queue.submit(owner, {"prompt": f"a calm sea {PIPELINE_ERROR_CUE}", **SMALL}),
        job_queue.submit(owner, {"prompt": f"a gale {CUBLAS_ALLOC_CUE}", **SMALL}),
        job_queue.submit(owner, {"prompt": "a calm sea", **SMALL}),
    ]
    oom, error, cublas, fine = (finished(job_queue, job.job_id) for job in jobs)
    assert worker.process.poll() is None
    assert (oom.status, oom.progress.step) == (JobStatus.FAILED, 1)
    assert oom.error == (
        "out of memory rendering 31 frames at 160x96: try fewer frames or a smaller size, "
        "or run the worker with MOCHI_OFFLOAD=model (or sequential)"
    )
    assert (error.status, error.error) == (
        JobStatus.FAILED,
        "the pipeline failed: RuntimeError: injected pipeline failure",
    )
    assert (cublas.status, cublas.error) == (JobStatus.FAILED, oom.error)
    assert fine.status is JobStatus.COMPLETED
    assert oom.worker_id == error.worker_id == cublas.worker_id == fine.worker_id
    assert not any(job_videos(settings.videos_dir, job.job_id) for job in (oom, error, cublas))


def test_a_file_size_limit_fails_the_job_without_a_partial_file_and_the_worker_goes_on(
    settings: Settings, job_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    ensure_tiny_model(settings.models_dir)  # built beforehand: the limited worker could not write it
    limit_bytes = 24 * 1024  # a 31-frame 160x96 clip is bigger (about 60 kB); a 7-frame 64x64 one is not
    worker = children.worker(settings, tmp_path / "worker.log", prefix=["prlimit", f"--fsize={limit_bytes}"])
    owner = new_account()
    too_big = finished(job_queue, job_queue.submit(owner, {"prompt": "too big", **SMALL}).job_id)
    small = finished(job_queue, job_queue.submit(owner, {"prompt": "small", **TINIEST}).job_id)
    assert worker.process.poll() is None
    assert (too_big.status, too_big.error) == (
        JobStatus.FAILED,
        f"the video could not be written to {settings.videos_dir}: file size limit exceeded",
    )
    assert [path.name for path in settings.videos_dir.iterdir() if too_big.job_id in path.name] == []
    assert small.status is JobStatus.COMPLETED
    assert iio.imread(settings.data_dir / (small.video_path or "")).shape == (7, 64, 64, 3)


def test_a_burst_of_100_submits_from_10_clients_gets_only_202_or_429_and_loses_no_job(
    settings: Settings, redis: Redis, tmp_path: Path, children: Children
) -> None:
    limited = replace(settings, max_pending_jobs=5, submits_per_minute=30)
    keys = [AccountStore(redis).create(f"burst-{uuid.uuid4().hex[:8]}")[1] for _ in range(10)]
    _, url = children.web(limited, tmp_path / "web.log")
    children.worker(limited, tmp_path / "worker.log")

    def ten_submits(key: str) -> list[httpx.Response]:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            return [client.post("/generate", json={"prompt": f"burst {n}", **TINIEST}) for n in range(10)]

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = [response for responses in pool.map(ten_submits, keys) for response in responses]
    assert len(answers) == 100
    assert {response.status_code for response in answers} <= {202, 429}
    refused = [response for response in answers if response.status_code == 429]
    assert all("retry-after" in response.headers and response.json()["detail"] for response in refused)
    accepted = [response.json()["job_id"] for response in answers if response.status_code == 202]
    assert len(accepted) >= 50  # 5 waiting per account at once, more as the worker takes them

    queue = JobQueue(redis, limited)
    ended = [finished(queue, job_id, timeout_s=300) for job_id in accepted]
    assert [record.status for record in ended] == [JobStatus.COMPLETED] * len(accepted)
    for record in ended:
        assert iio.imread(limited.data_dir / (record.video_path or "")).shape == (7, 64, 64, 3)
    print(f"burst: {len(accepted)} accepted and completed, {len(refused)} refused with 429, none lost")


# Long enough to decode and encode (a few seconds each) that a freeze lands where it is aimed.
FREEZABLE = {"num_frames": 61, "height": 256, "width": 256, "num_inference_steps": 3}


def thaw(pids: list[int]) -> None:
    """SIGCONT each process, the last frozen first; one that has exited meanwhile is skipped."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def ffmpeg_children(pid: int) -> list[int]:
    pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in pids if b"ffmpeg" in Path(f"/proc/{child}/cmdline").read_bytes()]


@pytest.mark.parametrize("moment", ["decoding", "encoding"])
def test_a_worker_frozen_past_its_heartbeat_cannot_spoil_the_video_another_finished(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, tmp_path: Path, moment: str, children: Children
) -> None:
    quick = replace(settings, heartbeat_ttl_s=2)
    queue = JobQueue(redis, quick, count_tokens)
    stale = children.worker(quick, tmp_path / "stale.log")
    job = queue.submit(new_account(), {"prompt": "a frozen lake", **FREEZABLE})

    def at_the_moment() -> list[int] | None:
        record = queue.store.get(job.job_id)
        assert record is not None and record.status is not JobStatus.COMPLETED, "froze too late"
        if record.progress.step < record.progress.total:
            return None
        if moment == "decoding":
            return [stale.process.pid]
        encoders = ffmpeg_children(stale.process.pid)
        return [*encoders, stale.process.pid] if encoders else None

    frozen: list[int] = wait_for(at_the_moment, 120, f"the stale worker {moment}", interval_s=0.005)  # type: ignore[assignment]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    children.defer(lambda: thaw(frozen))  # a stopped process would not hear the SIGTERM that stops it
    stale_id = queue.store.get(job.job_id).worker_id  # type: ignore[union-attr]
    # Past the heartbeat: the fresh worker's reaper gives the job to the fresh worker, which finishes it.
    children.worker(quick, tmp_path / "fresh.log")
    done = finished(queue, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.worker_id not in {None, stale_id}
    assert done.attempts == 2 and done.video_path is not None
    thaw(frozen)
    wait_for(lambda: "this attempt's video is dropped" in stale.log, 120, "the stale worker to let go")
    after = queue.store.get(job.job_id)
    assert after is not None and (after.status, after.video_path) == (JobStatus.COMPLETED, done.video_path)
    assert job_videos(quick.videos_dir, job.job_id) == [quick.data_dir / done.video_path]
    assert iio.imread(quick.data_dir / done.video_path).shape == (61, 256, 256, 3)
    assert not any(path.name.startswith(".") for path in quick.videos_dir.iterdir())  # no partial file left
