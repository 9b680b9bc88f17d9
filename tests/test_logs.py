"""Log lines: one format for every process, each line carrying the id of the job it was written for."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from mochi_app.logs import LOG_FORMAT, JobIdFilter, current_job_id, job_logging
from tests.harness import REPO

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

SCRIPT = """
import logging, threading
from mochi_app.logs import configure_logging, job_logging
configure_logging()
log = logging.getLogger("mochi_app.example")
log.info("before any job")
with job_logging("job-1"):
    log.info("inside the job")
    log.info("about another job", extra={"job_id": "job-2"})
    thread = threading.Thread(target=lambda: log.info("from another thread"))
    thread.start()
    thread.join()
log.info("after the job")
"""


def test_every_line_says_which_job_it_was_written_for() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stderr.splitlines()
    tails = [line.split(" mochi_app.example[", 1)[1].split("] ", 1)[1] for line in lines]
    assert tails == [
        "job=-: before any job",
        "job=job-1: inside the job",
        "job=job-2: about another job",
        "job=-: from another thread",  # the heartbeat and reaper threads are no job's
        "job=-: after the job",
    ]
    assert all(" INFO " in line for line in lines)


def test_the_job_is_reset_after_the_block_even_when_it_raises() -> None:
    with pytest.raises(RuntimeError), job_logging("doomed"):
        assert current_job_id.get() == "doomed"
        raise RuntimeError
    assert current_job_id.get() is None


def test_a_record_that_skipped_the_filter_still_formats() -> None:
    formatter = logging.Formatter(LOG_FORMAT, defaults={"job_id": "-"})
    record = logging.LogRecord("mochi_app.x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert formatter.format(record).endswith("job=-: hello there")
    assert JobIdFilter().filter(record) and record.job_id == "-"  # type: ignore[attr-defined]


def test_pytest_log_capture_still_sees_job_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mochi_app"), job_logging("captured"):
        logging.getLogger("mochi_app.example").info("job %s: captured", "captured")
    assert caplog.messages == ["job captured: captured"]
