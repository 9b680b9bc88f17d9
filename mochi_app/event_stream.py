"""`GET /events/{job_id}`: one job's events as server-sent events, resumable with `Last-Event-ID`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from mochi_app.job_events import START, JobEvent, events_key
from mochi_app.records import JobRecord
from mochi_app.studio import Studio

KEEPALIVE_MS = 15_000  # a comment this often, so proxies and clients keep an idle stream open
# redis-py 8 gives up on any read after 5 s by default: a blocked XREAD must outlast its BLOCK.
READ_TIMEOUT_S = KEEPALIVE_MS / 1000 + 10
CONNECT_TIMEOUT_S = 5.0
RETRY_MS = 2_000  # how long a browser's EventSource waits before it reconnects
BATCH = 100


def events_client(url: str) -> AsyncRedis:
    """A client for the event streams: they wait on it in the event loop, not in a thread each."""
    return AsyncRedis.from_url(url, socket_timeout=READ_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S)


def sse(event_id: str, kind: str, data: str) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"


async def job_events(events: AsyncRedis, studio: Studio, job_id: str, after: str) -> AsyncIterator[str]:
    """Every event after `after` as it happens, ending with the job's end (or its deletion).

    A job that ended before its stream was kept (or whose stream expired) gets one event: where it ended.
    """
    yield f"retry: {RETRY_MS}\n\n"
    key, waited = events_key(job_id), False
    while True:
        try:
            answer: Any = await events.xread({key: after}, count=BATCH, block=KEEPALIVE_MS if waited else None)
        except RedisError:  # the queue server is away: end here, and the client resumes from its last id
            return
        entries: list[tuple[Any, dict[Any, Any]]] = answer[0][1] if answer else []
        for entry_id, fields in entries:
            event = JobEvent.from_entry(entry_id, fields)
            after = event.event_id
            yield await _sent(studio, event.event_id, event.type, event.record)
            if event.record.status.is_terminal:
                return
        if entries:
            continue
        record = await run_in_threadpool(studio.store.get, job_id)
        if record is None:  # deleted meanwhile
            return
        if record.status.is_terminal:
            if after == START:
                yield await _sent(studio, "0-1", f"job.{record.status.lower()}", record)
            return
        if waited:
            yield ": keep-alive\n\n"
        waited = True


async def _sent(studio: Studio, event_id: str, kind: str, record: JobRecord) -> str:
    public = await run_in_threadpool(studio.public, record)
    return sse(event_id, kind, public.model_dump_json())
