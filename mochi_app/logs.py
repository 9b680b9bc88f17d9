"""Log lines for every process: one format, each line carrying the id of the job it was written for."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

NO_JOB = "-"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] job=%(job_id)s: %(message)s"

# The job this thread (or task) is working on now: set by the worker for the length of each job.
current_job_id: ContextVar[str | None] = ContextVar("current_job_id", default=None)


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    """Every log line written inside the block carries `job_id`."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class JobIdFilter(logging.Filter):
    """Adds `job_id` to each record: the current job's, unless the call passed its own in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get() or NO_JOB
        return True


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr by default) in LOG_FORMAT; does nothing if logging is already set up.

    The filter sits on this handler, not on the loggers, so other handlers (pytest's capture, say)
    see records as they are; the formatter's default covers a record that skipped the filter.
    """
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT, defaults={"job_id": NO_JOB}))
    logging.basicConfig(level=level, handlers=[handler])
