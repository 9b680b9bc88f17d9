"""The test harness: real child processes (workers, web, app.py) started, waited on by event, and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mochi_app.config import Settings
from mochi_app.guests import GUEST_COOKIE
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord
from mochi_app.redis_server import EmbeddedServer
from mochi_app.redis_server import free_loopback_port as free_port

__all__ = ["free_port"]

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


def finished(queue: JobQueue, job_id: str, timeout_s: float = 240) -> JobRecord:
    def terminal() -> JobRecord | None:
        record = queue.store.get(job_id)
        return record if record is not None and record.status.is_terminal else None

    result = wait_for(terminal, timeout_s, f"job {job_id} to finish")
    assert isinstance(result, JobRecord)
    return result


class Children:
    """Starts processes (and queue servers) for one test, and stops every one at its end: the `children` fixture."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], object]] = []

    def launch(self, command: list[str], env: dict[str, str], log_path: Path) -> Child:
        return self._kept(launch(command, env, log_path))

    def child(
        self, command: list[str], env: dict[str, str], log_path: Path, ready: Callable[[Child], bool], **options: bool
    ) -> Child:
        return self._kept(start_child(command, env, log_path, ready, **options))

    def worker(self, settings: Settings, log_path: Path, **options: Any) -> Child:
        return self._kept(start_worker(settings, log_path, **options))

    def web(self, settings: Settings, log_path: Path, **extra_env: str) -> tuple[Child, str]:
        child, url = start_web(settings, log_path, **extra_env)
        return self._kept(child), url

    def app(self, tmp_path: Path, *, own_group: bool = False, **extra_env: str) -> RunningApp:
        app = start_app(tmp_path, own_group=own_group, **extra_env)
        self._kept(app.child)
        return app

    def queue_server(self, folder: Path) -> str:
        """A Valkey of its own in `folder`; returns its URL."""
        server = EmbeddedServer(folder)
        url = server.start()
        self._stops.append(server.stop)
        return url

    def defer(self, undo: Callable[[], object]) -> None:
        """Run `undo` at the end, before stopping whatever was started until now."""
        self._stops.append(undo)

    def stop_all(self) -> None:
        """Stop everything, the last started first (a worker before the web it talks to)."""
        while self._stops:
            self._stops.pop()()

    def _kept(self, child: Child) -> Child:
        self._stops.append(child.stop)
        return child
