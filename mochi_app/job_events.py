"""Each job's events (status changes and progress steps) in a Redis stream, written with the change they report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis.client import Pipeline

from mochi_app.records import JobRecord

# A job makes at most 100 steps and 5 status changes: a few hundred entries is every event it has.
MAX_EVENTS = 500
KEEP_AFTER_END_S = 24 * 3600  # a client may reconnect and replay this long after the job ended
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
START = "0-0"


def events_key(job_id: str) -> str:
    return f"job-events:{job_id}"


def event_type(before: JobRecord | None, after: JobRecord) -> str | None:
    """`job.{status}` for a new job or a new status, `job.progress` for a step; None for a change no
    observer sees (a cancel asked for, say, shows as the CANCELLED that follows)."""
    if before is None or before.status is not after.status:
        return f"job.{after.status.lower()}"
    if before.progress.step != after.progress.step:
        return "job.progress"
    return None


def record_event(pipe: Pipeline, before: JobRecord | None, after: JobRecord) -> None:
    """Append the event this change makes, inside the transaction that writes `after` (see JobStore)."""
    kind = event_type(before, after)
    if kind is None:
        return
    key = events_key(after.job_id)
    pipe.xadd(key, {"type": kind, "record": after.model_dump_json()}, maxlen=MAX_EVENTS, approximate=True)
    if after.status.is_terminal:
        pipe.expire(key, KEEP_AFTER_END_S)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event as a stream keeps it: its id (the SSE `id:`), its type, and the record as it was."""

    event_id: str
    type: str
    record: JobRecord

    @classmethod
    def from_entry(cls, entry_id: Any, fields: dict[Any, Any]) -> JobEvent:
        def text(value: Any) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        values = {text(name): text(value) for name, value in fields.items()}
        return cls(text(entry_id), values["type"], JobRecord.model_validate_json(values["record"]))


def after_event_id(last_event_id: str | None) -> str:
    """Where a stream resumes: after `Last-Event-ID` when it is one of ours, else from the start."""
    if last_event_id is not None and STREAM_ID.fullmatch(last_event_id.strip()):
        return last_event_id.strip()
    return START
