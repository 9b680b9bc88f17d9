"""Runs everything on one machine: the embedded server when no URL is set, N restarted workers, the web."""

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

from mochi_app.config import PRIVATE_UMASK, Settings
from mochi_app.gpus import visible_gpus, worker_gpus
from mochi_app.redis_server import EmbeddedServer

log = logging.getLogger(__name__)

RESTART_DELAY_S = 2.0
CANNOT_RUN_HERE = 2  # the worker's exit code when its model cannot run on this host (cli.CANNOT_RUN_HERE)
# Past the workers' grace period: time to finish the step, decode and hand the job back, before SIGKILL.
STOP_MARGIN_S = 30.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class WorkerSlot:
    """One supervised `python -m mochi_app worker` process, restarted whenever it dies."""

    index: int
    data_dir: Path
    workers: int  # how many slots app.py runs: a CPU worker takes its share of the cores
    gpu: str | None = None
    process: subprocess.Popen[bytes] | None = None
    given_up: bool = False  # it cannot run on this host: restarting it would fail the same way

    def start(self) -> None:
        # Pin what the child must agree on with us, whatever folder app.py was started from.
        env = dict(os.environ, MOCHI_DATA_DIR=str(self.data_dir), MOCHI_WORKERS=str(self.workers))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        # A group of its own: a terminal's Ctrl-C goes to app.py's group, and app.py alone must act on
        # it, stopping the workers (each finishes its job within the grace period) before the server.
        self.process = subprocess.Popen([sys.executable, "-m", "mochi_app", "worker"], env=env, process_group=0)
        on = f"GPU {self.gpu}" if self.gpu is not None else "no GPU pinned"
        log.info("worker %d started (pid %d, %s)", self.index, self.process.pid, on)


@dataclass
class Supervisor:
    """Owns the embedded server (if any) and the worker processes of one `python app.py`."""

    settings: Settings
    server: EmbeddedServer | None = None
    slots: list[WorkerSlot] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start the server (unless MOCHI_REDIS_URL names one) and the workers, who find it in the data dir."""
        if self.settings.redis_url is None:
            self.server = EmbeddedServer(self.settings.redis_dir)
            self.server.start()
        gpus = worker_gpus(self.settings.workers, visible_gpus(os.environ))
        self.slots = [WorkerSlot(index, self.settings.data_dir, len(gpus), gpu) for index, gpu in enumerate(gpus)]
        for slot in self.slots:
            slot.start()

    def watch(self, poll_s: float = 0.5) -> None:
        """Restart dead workers until `stop_soon()` is called."""
        while not self.stopping.wait(poll_s):
            for slot in self.slots:
                if slot.given_up or slot.process is None or slot.process.poll() is None:
                    continue
                if slot.process.returncode == CANNOT_RUN_HERE:
                    slot.given_up = True
                    log.error(
                        "worker %d cannot run on this host (see its reason above, also on the page and /healthz); "
                        "not restarting it",
                        slot.index,
                    )
                    continue
                log.warning(
                    "worker %d exited with code %d; restarting in %.0f s",
                    slot.index,
                    slot.process.returncode,
                    RESTART_DELAY_S,
                )
                if self.stopping.wait(RESTART_DELAY_S):
                    return
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
            self.server.stop()
        log.info("stopped")


def run_all(settings: Settings) -> None:
    """`python app.py`: the web process in the foreground until Ctrl-C or SIGTERM, then stop every child."""
    from mochi_app.web import serve

    os.umask(PRIVATE_UMASK)  # the server, the workers and the web inherit it
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
