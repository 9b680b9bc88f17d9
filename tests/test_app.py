"""`python app.py` as a newcomer runs it: embedded server, a supervised worker, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.redis_server import connect
from mochi_app.schemas import JobStatus
from mochi_app.tokens import TokenCounter
from tests.conftest import REPO, SMALL, wait_for


def test_app_runs_jobs_restarts_a_dead_worker_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log_path = tmp_path / "app.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCHI_")}
    env.update(MOCHI_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log_file:
        app = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    log = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        wait_for(lambda: "ready on queue" in log(), 120, "the first worker", interval_s=0.1)
        settings = Settings(data_dir=data_dir)
        queue = JobQueue(connect(settings), settings, TokenCounter.tiny())
        record = queue.submit(f"acct-{uuid.uuid4().hex[:6]}", {"prompt": "a cat", **SMALL})
        done = wait_for(lambda: (r := queue.store.get(record.job_id)) and r.status.is_terminal and r, 120, "the job")
        assert done.status is JobStatus.COMPLETED  # type: ignore[union-attr]

        first_pid = int(re.findall(r"worker 0 started \(pid (\d+)\)", log())[0])
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: log().count("ready on queue") == 2, 120, "the restarted worker", interval_s=0.1)
        assert "worker 0 exited with code -9; restarting" in log()
    finally:
        app.send_signal(signal.SIGTERM)
        code = app.wait(60)
    assert code == 0, log()
    assert not (data_dir / "redis" / "server.url").exists()
    second_pid = int(re.findall(r"worker 0 started \(pid (\d+)\)", log())[1])
    assert not Path(f"/proc/{second_pid}").exists() or "zombie" in Path(f"/proc/{second_pid}/status").read_text()
