"""Runs everything on one machine and restarts what dies: the embedded server, the workers; the web in front."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from redis.exceptions import RedisError

from mochi_app.config import PRIVATE_UMASK, Settings
from mochi_app.connections import QueueUnavailable, redis_client
from mochi_app.disk import check_writable
from mochi_app.gpus import visible_gpus, worker_gpus
from mochi_app.queue import JobQueue
from mochi_app.redis_server import EmbeddedServer
from mochi_app.snapshots import Snapshots, SnapshotUnusable, snapshot_place
from mochi_app.storage import StorageUnusable

log = logging.getLogger(__name__)

RESTART_DELAY_S = 2.0  # the first wait before restarting a child; it doubles while the child keeps dying
MAX_RESTART_DELAY_S = 60.0
STEADY_S = 60.0  # a child that ran this long before it died is restarted after the first wait again
CANNOT_RUN_HERE = 2  # the worker's exit code when its model cannot run on this host (cli.CANNOT_RUN_HERE)
# Past the workers' grace period: time to finish the step, decode and hand the job back, before SIGKILL.
STOP_MARGIN_S = 30.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Backoff:
    """When to restart a child that died: `RESTART_DELAY_S` after it died, twice as long each time it dies
    again soon after starting (up to `MAX_RESTART_DELAY_S`), so a child that cannot run yet (a full disk,
    a server not back) is tried less and less often instead of many times a second."""

    delay_s: float = RESTART_DELAY_S
    started_at: float = 0.0
    restart_at: float | None = None  # set while the child is dead

    def started(self) -> None:
        self.started_at, self.restart_at = time.monotonic(), None

    def died(self) -> float:
        """Schedules the restart; returns the wait in seconds."""
        now = time.monotonic()
        if now - self.started_at >= STEADY_S:
            self.delay_s = RESTART_DELAY_S
        wait_s, self.delay_s = self.delay_s, min(self.delay_s * 2, MAX_RESTART_DELAY_S)
        self.restart_at = now + wait_s
        return wait_s

    @property
    def due(self) -> bool:
        return self.restart_at is not None and time.monotonic() >= self.restart_at


@dataclass
class WorkerSlot:
    """One supervised `python -m mochi_app worker` process, restarted whenever it dies."""

    index: int
    data_dir: Path
    workers: int  # how many slots app.py runs: a CPU worker takes its share of the cores
    gpu: str | None = None
    process: subprocess.Popen[bytes] | None = None
    given_up: bool = False  # it cannot run on this host: restarting it would fail the same way
    backoff: Backoff = field(default_factory=Backoff)

    def start(self) -> None:
        # Pin what the child must agree on with us, whatever folder app.py was started from.
        env = dict(os.environ, MOCHI_DATA_DIR=str(self.data_dir), MOCHI_WORKERS=str(self.workers))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        # A group of its own: a terminal's Ctrl-C goes to app.py's group, and app.py alone must act on
        # it, stopping the workers (each finishes its job within the grace period) before the server.
        self.process = subprocess.Popen([sys.executable, "-m", "mochi_app", "worker"], env=env, process_group=0)
        self.backoff.started()
        on = f"GPU {self.gpu}" if self.gpu is not None else "no GPU pinned"
        log.info("worker %d started (pid %d, %s)", self.index, self.process.pid, on)


@dataclass
class Supervisor:
    """Owns the embedded server (if any) and the worker processes of one `python app.py`."""

    settings: Settings
    server: EmbeddedServer | None = None
    slots: list[WorkerSlot] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    server_backoff: Backoff = field(default_factory=Backoff)

    def start(self) -> None:
        """Start the server (unless MOCHI_REDIS_URL names one) and the workers, who find it in the data dir."""
        if self.settings.redis_url is None:
            self.server = EmbeddedServer(self.settings.redis_dir)
            self._restore(self.server.start())
        gpus = worker_gpus(self.settings.workers, visible_gpus(os.environ))
        self.slots = [WorkerSlot(index, self.settings.data_dir, len(gpus), gpu) for index, gpu in enumerate(gpus)]
        for slot in self.slots:
            slot.start()

    def watch(self, poll_s: float = 0.5) -> None:
        """Restart the embedded server and dead workers, each with its backoff, until `stop_soon()`."""
        while not self.stopping.wait(poll_s):
            self._watch_server()
            for slot in self.slots:
                self._watch_worker(slot)

    def _watch_server(self) -> None:
        server = self.server
        if server is None or server.process is None:
            return
        if self.server_backoff.restart_at is None:
            if (code := server.process.poll()) is not None:
                wait_s = self.server_backoff.died()
                log.error("the queue server exited with code %d; restarting it in %.0f s", code, wait_s)
            return
        if not self.server_backoff.due:
            return
        try:
            server.start()
        except QueueUnavailable as exc:
            log.error(
                "the queue server did not start again (%s); trying again in %.0f s", exc, self.server_backoff.died()
            )
            return
        self.server_backoff.started()
        log.info("the queue server is back, with every job it had accepted")

    def _watch_worker(self, slot: WorkerSlot) -> None:
        if slot.given_up or slot.process is None:
            return
        if slot.backoff.restart_at is None:
            if slot.process.poll() is None:
                return
            if slot.process.returncode == CANNOT_RUN_HERE:
                slot.given_up = True
                log.error(
                    "worker %d cannot run on this host (see its reason above, also on the page and /healthz); "
                    "not restarting it",
                    slot.index,
                )
                return
            wait_s = slot.backoff.died()
            log.warning(
                "worker %d exited with code %d; restarting in %.0f s", slot.index, slot.process.returncode, wait_s
            )
        elif slot.backoff.due:
            slot.start()

    def stop_soon(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stopping.set()

    def stop(self) -> None:
        """SIGTERM every worker (each finishes its job within the grace period or gives it back), then the server."""
        live = [slot.process for slot in self.slots if slot.process is not None and slot.process.poll() is None]
        for process in live:
            process.terminate()
        deadline = time.monotonic() + self.settings.stop_grace_s + STOP_MARGIN_S
        for process in live:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.server is not None:
            self._snapshot(self.server.url)
            self.server.stop()
        log.info("stopped")

    def _restore(self, url: str) -> None:
        """A new (or wiped) embedded server gets back the latest snapshot's records and accounts."""
        if not self.settings.snapshot_interval_s:
            return
        try:
            snapshots = Snapshots(snapshot_place(self.settings))
            restored = snapshots.restore_if_empty(JobQueue(redis_client(url), self.settings), self.settings.data_dir)
        except (StorageUnusable, SnapshotUnusable) as exc:
            log.error("the latest snapshot could not be restored (%s); the snapshots are kept as they are", exc)
            return
        if restored is not None:
            log.info(
                "restored %d job(s) (%d to run again) and %d account(s) from the latest snapshot",
                restored.jobs, restored.requeued, restored.accounts,
            )  # fmt: skip

    def _snapshot(self, url: str) -> None:
        """Once more as everything stops, with every worker's last job recorded: a restart loses nothing."""
        if not self.settings.snapshot_interval_s or not url:
            return
        try:
            Snapshots(snapshot_place(self.settings)).keep(redis_client(url), self.settings.data_dir)
        except (StorageUnusable, RedisError) as exc:
            log.error("the last snapshot could not be taken (%s)", exc)


def run_all(settings: Settings) -> None:
    """`python app.py`: the web process in the foreground until Ctrl-C or SIGTERM, then stop every child."""
    from mochi_app.web import serve

    os.umask(PRIVATE_UMASK)  # the server, the workers and the web inherit it
    check_writable(settings)
    supervisor = Supervisor(settings)
    # uvicorn takes these signals while it serves and hands them back here when it has shut down.
    signal.signal(signal.SIGTERM, supervisor.stop_soon)
    signal.signal(signal.SIGINT, supervisor.stop_soon)
    try:
        supervisor.start()
        threading.Thread(target=supervisor.watch, name="supervisor", daemon=True).start()
        log.info("queue server and %d worker(s) running; Ctrl-C stops everything", len(supervisor.slots))
        if not supervisor.stopping.is_set():
            serve(settings)
    finally:
        supervisor.stop_soon()
        supervisor.stop()
