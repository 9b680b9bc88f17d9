"""Shared fixtures: a real Valkey server, the real tiny model, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.redis_server import EmbeddedServer
from mochi_app.tokens import TokenCounter

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_frames": 31, "height": 96, "width": 160, "num_inference_steps": 4}


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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the session: the tiny model is built into it once."""
    return tmp_path_factory.mktemp("data")


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
    return Settings(data_dir=data_dir, redis_url=redis_url, model="tiny", queue_name=f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def count_tokens() -> TokenCounter:
    return TokenCounter.tiny()


@pytest.fixture
def job_queue(redis: Redis, settings: Settings, count_tokens: TokenCounter) -> JobQueue:
    return JobQueue(redis, settings, count_tokens)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCHI_")}
    env.update(
        MOCHI_DATA_DIR=str(settings.data_dir),
        MOCHI_REDIS_URL=settings.redis_url or "",
        MOCHI_MODEL=settings.model,
        MOCHI_QUEUE_NAME=settings.queue_name,
        MOCHI_JOB_TIMEOUT_S=str(settings.job_timeout_s),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_worker(settings: Settings, log_path: Path, **extra_env: str) -> WorkerProcess:
    """`python -m mochi_app worker` in a subprocess, returned once it is ready for jobs."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "mochi_app", "worker"],
            cwd=REPO,
            env=worker_env(settings, **extra_env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode}:\n{worker.log}")
        return "ready on queue" in worker.log

    wait_for(ready, 120, "the worker to be ready", interval_s=0.1)
    return worker


@pytest.fixture(scope="module")
def module_settings(data_dir: Path, redis_url: str) -> Settings:
    return Settings(data_dir=data_dir, redis_url=redis_url, model="tiny", queue_name=f"mod-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def worker(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker process shared by a test module, on that module's own queue."""
    running = start_worker(module_settings, tmp_path_factory.mktemp("worker") / "worker.log")
    yield running
    running.stop()


@pytest.fixture
def worker_queue(module_settings: Settings, redis: Redis, count_tokens: TokenCounter) -> JobQueue:
    """A producer on the shared worker's queue."""
    return JobQueue(redis, module_settings, count_tokens)
