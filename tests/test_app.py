"""`python app.py` as a newcomer runs it: page, REST and gradio_client on one port; workers supervised."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import imageio.v3 as iio
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from mochi_app.config import Settings
from mochi_app.connections import connect
from mochi_app.store import JobStore
from mochi_app.video import job_videos
from tests.harness import REPO, SLOW, SMALL, Children, RunningApp, newcomer_env, wait_for
from tests.test_gpus import fake_nvidia_smi

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


def download(app: RunningApp, job: dict[str, Any], to: Path) -> tuple[int, ...]:
    """Fetch a finished job's MP4 and return its decoded shape (frames, height, width, channels)."""
    to.write_bytes(httpx.get(app.url + job["download_url"]).raise_for_status().content)
    return tuple(iio.imread(to).shape)


def test_gradio_client_submits_polls_and_downloads(studio_app: RunningApp, tmp_path: Path) -> None:
    client = Client(studio_app.url, verbose=False)
    job = client.predict("a paper boat on a river", **SMALL, api_name="/submit")

    def completed() -> dict[str, Any] | None:
        status: dict[str, Any] = client.predict(job["job_id"], api_name="/status")
        assert status["status"] in {"PENDING", "RUNNING", "COMPLETED"}, status
        return status if status["status"] == "COMPLETED" else None

    done = wait_for(completed, 120, "the job", interval_s=0.2)
    assert download(studio_app, done, tmp_path / "boat.mp4") == (31, 96, 160, 3)  # type: ignore[arg-type]


def test_gradio_client_and_rest_quote_alike_and_queue_nothing(studio_app: RunningApp) -> None:
    client = Client(studio_app.url, verbose=False)
    by_gradio: dict[str, Any] = client.predict("a paper boat", **SMALL, api_name="/quote")
    by_rest = httpx.post(f"{studio_app.url}/quote", json={"prompt": "a paper boat", **SMALL}).json()
    for quote in (by_gradio, by_rest):
        assert quote["estimated_run_s"] > 0 and quote["budget"]["daily_gpu_seconds"] == 0  # the local owner
        assert quote["request"]["num_frames"] == SMALL["num_frames"]
    assert by_gradio["estimated_run_s"] == by_rest["estimated_run_s"]
    with pytest.raises(AppError, match="height must be"):
        client.predict("a paper boat", **{**SMALL, "height": 1000}, api_name="/quote")


def test_rest_submits_polls_and_downloads(studio_app: RunningApp, tmp_path: Path) -> None:
    job = httpx.post(f"{studio_app.url}/generate", json={"prompt": "a kite over a beach", **SMALL}).json()

    def completed() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(f"{studio_app.url}/status/{job['job_id']}").json()
        return status if status["status"] == "COMPLETED" else None

    done = wait_for(completed, 120, "the job", interval_s=0.2)
    assert download(studio_app, done, tmp_path / "kite.mp4") == (31, 96, 160, 3)  # type: ignore[arg-type]


def test_a_killed_worker_comes_back_and_the_next_job_completes(studio_app: RunningApp) -> None:
    app = studio_app.child
    first_pid = int(re.findall(r"worker 0 started \(pid (\d+)", app.log)[-1])
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: "worker 0 exited with code -9; restarting" in app.log, 120, "the restart notice")
    wait_for(lambda: len(re.findall(r"worker 0 started", app.log)) >= 2, 120, "the restarted worker")
    job = httpx.post(f"{studio_app.url}/generate", json={"prompt": "after the crash", **SMALL}).json()
    done = wait_for(
        lambda: (s := httpx.get(f"{studio_app.url}/status/{job['job_id']}").json())["status"] == "COMPLETED" and s,
        120,
        "the job on the restarted worker",
    )
    assert done["model"] == "tiny"  # type: ignore[index]


def test_the_console_says_where_to_look_and_that_tiny_videos_are_noise(studio_app: RunningApp) -> None:
    log = studio_app.child.log
    assert f"studio page at {studio_app.url}" in log
    assert "TINY random-weight model: its videos are noise" in log


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_stops_every_child_cleanly_without_a_traceback(
    tmp_path: Path, stop: signal.Signals, children: Children
) -> None:
    app = children.app(tmp_path, MOCHI_WARMUP="0")
    worker_pid = int(re.findall(r"worker 0 started \(pid (\d+)", app.child.log)[0])
    app.child.process.send_signal(stop)
    assert app.child.process.wait(60) == 0, app.child.log
    assert "Traceback" not in app.child.log
    assert not (app.data_dir / "redis" / "server.url").exists()
    assert not Path(f"/proc/{worker_pid}").exists() or "zombie" in Path(f"/proc/{worker_pid}/status").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{app.url}/healthz", timeout=2)


def test_ctrl_c_in_the_terminal_lets_the_running_job_finish_before_anything_stops(
    tmp_path: Path, children: Children
) -> None:
    """A terminal sends Ctrl-C to app.py's whole process group; only app.py may act on it, stopping in order."""
    # A grace period no loaded machine outlasts: the job must finish, not go back to the queue.
    app = children.app(tmp_path, own_group=True, MOCHI_WARMUP="0", MOCHI_STOP_GRACE_S="600")
    job_id = httpx.post(f"{app.url}/generate", json={"prompt": "finish me", **SLOW}).json()["job_id"]

    def denoising() -> bool:
        return httpx.get(f"{app.url}/status/{job_id}").json()["progress"]["step"] > 0

    wait_for(denoising, 60, "the job to start denoising", interval_s=0.02)
    os.killpg(app.child.process.pid, signal.SIGINT)
    assert app.child.process.wait(660) == 0, app.child.log
    assert f"job {job_id}: completed in" in app.child.log
    assert len(job_videos(app.data_dir / "videos", job_id)) == 1
    assert "Traceback" not in app.child.log


def test_accounts_commands_reach_the_running_app(studio_app: RunningApp) -> None:
    name = f"dana-{uuid.uuid4().hex[:6]}"
    env = newcomer_env(studio_app.data_dir, port=7860)

    def accounts(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mochi_app", "accounts", *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)

    created = accounts("create", name)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{studio_app.url}/session", headers=bearer).json()["account"] == name
    assert f"{name}\tactive" in accounts("list").stdout
    assert accounts("create", name).returncode == 2
    assert accounts("revoke", name).returncode == 0
    assert httpx.get(f"{studio_app.url}/status/{uuid.uuid4()}", headers=bearer).status_code == 401
    assert f"{name}\trevoked" in accounts("list").stdout


def test_two_workers_pinned_one_per_gpu_render_jobs_side_by_side(tmp_path: Path, children: Children) -> None:
    # The host's driver reports two GPUs; this CPU-only torch ignores the pinning and renders tiny.
    path = fake_nvidia_smi(tmp_path, "echo 0; echo 1")
    app = children.app(tmp_path, MOCHI_WORKERS="2", MOCHI_WARMUP="0", **path)
    wait_for(lambda: app.child.log.count("ready on queue") >= 2, 120, "both workers")
    pids = [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+), GPU \d\)", app.child.log)]
    environs = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in pids]
    assert [b"CUDA_VISIBLE_DEVICES=0" in environs[0], b"CUDA_VISIBLE_DEVICES=1" in environs[1]] == [True, True]
    jobs = [httpx.post(f"{app.url}/generate", json={"prompt": f"boat {n}", **SMALL}).json() for n in range(4)]
    store = JobStore(connect(Settings(data_dir=app.data_dir)))

    def all_completed() -> list[Any] | None:
        records = [store.get(job["job_id"]) for job in jobs]
        return records if all(r is not None and r.status == "COMPLETED" for r in records) else None

    records = wait_for(all_completed, 180, "the four jobs")
    assert len({record.worker_id for record in records}) == 2  # type: ignore[union-attr]
    first, second = sorted(records, key=lambda record: record.started_at)[:2]  # type: ignore[arg-type, union-attr]
    assert second.started_at < first.finished_at  # both rendered at once
