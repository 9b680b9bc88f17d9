"""Shared fixtures: a real Valkey server, the real tiny model, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from mochi_app.config import Settings
from mochi_app.guests import GUEST_COOKIE
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord
from mochi_app.redis_server import EmbeddedServer
from mochi_app.redis_server import free_loopback_port as free_port
from mochi_app.tokens import TokenCounter

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_frames": 31, "height": 96, "width": 160, "num_inference_steps": 4}
# Per-account limits high enough that tests sharing an account never meet them by accident.
GENEROUS = {
    "max_pending_jobs": 100,
    "submits_per_minute": 10_000,
    "max_pending_jobs_per_address": 10_000,
    "max_queued_jobs": 10_000,
    "new_guests_per_hour": 10_000,
}
# Big enough that denoising takes a few seconds on a CPU, so a cancel or a crash can land mid-run.
SLOW = {"num_frames": 61, "height": 256, "width": 256, "num_inference_steps": 100}


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.02) -> object:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def guest_cookie(url: str) -> str:
    """A new guest's token, as a browser gets one: by opening the page."""
    page = httpx.get(f"{url}/", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    return page.cookies[GUEST_COOKIE]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the session: the tiny model is built into it once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """genmo/mochi-1-preview's files in its real layout, with tiny random weights (tests/hub_snapshot.py)."""
    from tests.hub_snapshot import write_repo

    return write_repo(tmp_path_factory.mktemp("hub-repo"))


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds that repo, as a finished download leaves it."""
    from tests.hub_snapshot import write_hub_cache

    home = tmp_path_factory.mktemp("hf-home")
    write_hub_cache(home)
    return home


@pytest.fixture(scope="session")
def hub_snapshot(hub_home: Path) -> Path:
    """The snapshot folder in `hub_home`'s cache: a local copy of the repo, as MOCHI_MODEL may name one."""
    from tests.hub_snapshot import COMMIT

    return hub_home / "hub" / "models--genmo--mochi-1-preview" / "snapshots" / COMMIT


@pytest.fixture(scope="session")
def redis_url(data_dir: Path) -> Iterator[str]:
    server = EmbeddedServer(data_dir / "redis")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(data_dir: Path, redis_url: str) -> Settings:
    """Settings on the tiny model, with a queue of this test's own."""
    return Settings(
        data_dir=data_dir, redis_url=redis_url, model="tiny", queue_name=f"test-{uuid.uuid4().hex[:8]}", **GENEROUS
    )


@pytest.fixture(scope="session")
def count_tokens() -> TokenCounter:
    return TokenCounter.tiny()


@pytest.fixture
def job_queue(redis: Redis, settings: Settings, count_tokens: TokenCounter) -> JobQueue:
    return JobQueue(redis, settings, count_tokens)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process `settings` (all of them), then `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCHI_")}
    env.update(settings.to_env(), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


@dataclass
class Child:
    """A subprocess of ours (worker, web, app.py) whose output goes to a log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def launch(command: list[str], env: dict[str, str], log_path: Path, *, own_group: bool = False) -> Child:
    """Start `command` in the repository with its output in `log_path`, and return at once."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            process_group=0 if own_group else None,
        )
    return Child(process, log_path)


def start_child(
    command: list[str], env: dict[str, str], log_path: Path, ready: Callable[[Child], bool], *, own_group: bool = False
) -> Child:
    """Start `command` and return once `ready(child)` holds; fail with its log if it dies first.

    `own_group` starts it in a process group of its own, as a shell starts a command: a test can then
    send the group a signal, as a terminal's Ctrl-C does, without reaching pytest.
    """
    child = launch(command, env, log_path, own_group=own_group)
    process = child.process

    def started() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{' '.join(command)} exited with {process.returncode}:\n{child.log}")
        return ready(child)

    wait_for(started, 120, f"{' '.join(command[1:])} to be ready", interval_s=0.1)
    return child


def start_worker(
    settings: Settings,
    log_path: Path,
    module: str = "mochi_app",
    prefix: Sequence[str] = (),
    **extra_env: str,
) -> Child:
    """`python -m mochi_app worker` (or another `module`'s) in a subprocess, returned once it is ready for jobs.

    `prefix` runs the worker through another command that then execs it (`prlimit`, say).
    """
    command = [*prefix, sys.executable, "-m", module, "worker"]
    env = worker_env(settings, **extra_env)
    return start_child(command, env, log_path, lambda child: "ready on queue" in child.log)


def start_web(settings: Settings, log_path: Path, **extra_env: str) -> tuple[Child, str]:
    """`python -m mochi_app serve` on a free port; returns the process and its base URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mochi_app", "serve"]
    env = worker_env(settings, MOCHI_PORT=str(port), **extra_env)
    return start_child(command, env, log_path, lambda child: answers(f"{url}/healthz")), url


@pytest.fixture(scope="module")
def module_settings(data_dir: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=data_dir, redis_url=redis_url, model="tiny", queue_name=f"mod-{uuid.uuid4().hex[:8]}", **GENEROUS
    )


@pytest.fixture(scope="module")
def worker(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    """One worker process shared by a test module, on that module's own queue."""
    running = start_worker(module_settings, tmp_path_factory.mktemp("worker") / "worker.log")
    yield running
    running.stop()


@pytest.fixture
def worker_queue(module_settings: Settings, redis: Redis, count_tokens: TokenCounter) -> JobQueue:
    """A producer on the shared worker's queue."""
    return JobQueue(redis, module_settings, count_tokens)


def newcomer_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of someone who just cloned the repo: no MOCHI_* settings but a fresh data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOCHI_", "GRADIO_"))}
    env.update(MOCHI_DATA_DIR=str(data_dir), MOCHI_PORT=str(port), PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass
class RunningApp:
    child: Child
    url: str
    data_dir: Path


def start_app(tmp_path: Path, *, own_group: bool = False, **extra_env: str) -> RunningApp:
    """`python app.py` as a newcomer runs it, returned once the page answers and a worker is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"

    def ready(app: Child) -> bool:
        return "ready on queue" in app.log and answers(f"{url}/healthz")

    env = newcomer_env(data_dir, port, **extra_env)
    child = start_child([sys.executable, "app.py"], env, tmp_path / "app.log", ready, own_group=own_group)
    return RunningApp(child, url, data_dir)


@pytest.fixture(scope="session")
def studio_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """One `python app.py` shared by the end-to-end and browser tests."""
    app = start_app(tmp_path_factory.mktemp("app"))
    yield app
    app.child.stop()


def finished(queue: JobQueue, job_id: str, timeout_s: float = 240) -> JobRecord:
    def terminal() -> JobRecord | None:
        record = queue.store.get(job_id)
        return record if record is not None and record.status.is_terminal else None

    result = wait_for(terminal, timeout_s, f"job {job_id} to finish")
    assert isinstance(result, JobRecord)
    return result
