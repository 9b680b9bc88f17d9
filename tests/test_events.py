"""`GET /events/{job_id}`: a job's events as server-sent events, resumable, and the owner's only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.event_stream import KEEPALIVE_MS, events_client
from mochi_app.job_events import events_key
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.runner import JobRunner
from mochi_app.storage import open_storage
from mochi_app.tokens import TokenCounter
from mochi_app.web import create_app
from tests.harness import SMALL, Children, new_account
from tests.test_storage import StillRenderer

STEPS = 4


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    data: dict[str, Any]


def read_events(lines: Iterator[str], stop_after: int | None = None) -> list[Event]:
    """Parse an SSE body (or as much of it as `stop_after` events), ignoring comments and `retry:`."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                events.append(Event(fields["id"], fields["event"], json.loads(fields["data"])))
                if stop_after is not None and len(events) == stop_after:
                    break
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def finished_job(settings: Settings, redis: Redis, count_tokens: TokenCounter, account: str) -> JobRecord:
    queue = JobQueue(redis, settings, count_tokens)
    job = queue.submit(account, {"prompt": "a heron takes off", **SMALL, "num_inference_steps": STEPS})
    queue.rq.remove(job.job_id)
    JobRunner(queue, StillRenderer(), settings, open_storage(settings), worker_id="w").run(job.job_id)
    record = queue.store.get(job.job_id)
    assert record is not None and record.status is JobStatus.COMPLETED
    return record


def test_a_finished_jobs_stream_replays_every_event_then_ends_and_resumes_after_last_event_id(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, two_accounts: tuple[str, str, str], tmp_path: Path
) -> None:
    owner, owner_key, _ = two_accounts
    record = finished_job(settings, redis, count_tokens, owner)
    auth = {"Authorization": f"Bearer {owner_key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        answer = http.get(f"/events/{record.job_id}", headers=auth)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        events = read_events(iter(answer.text.split("\n")))

        types = [event.type for event in events]
        assert types == ["job.pending", "job.running", *["job.progress"] * STEPS, "job.completed"]
        assert [event.data["progress"]["step"] for event in events if event.type == "job.progress"] == [1, 2, 3, 4]
        assert events[-1].data["status"] == "COMPLETED" and events[-1].data["download_url"]
        stored = [entry_id.decode() for entry_id, _ in redis.xrange(events_key(record.job_id))]
        assert [event.event_id for event in events] == stored

        for cut in (1, 3, len(events) - 1):
            resumed = http.get(f"/events/{record.job_id}", headers={**auth, "Last-Event-ID": events[cut - 1].event_id})
            rest = read_events(iter(resumed.text.split("\n")))
            assert [event.event_id for event in rest] == [event.event_id for event in events[cut:]]
        done = http.get(f"/events/{record.job_id}", headers={**auth, "Last-Event-ID": events[-1].event_id})
        assert read_events(iter(done.text.split("\n"))) == []  # nothing after the end, and the stream closes
        garbage = http.get(f"/events/{record.job_id}", headers={**auth, "Last-Event-ID": "not-an-id"})
        assert len(read_events(iter(garbage.text.split("\n")))) == len(events)  # from the start


def test_another_accounts_stream_is_missing_and_a_stranger_needs_to_sign_in(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, two_accounts: tuple[str, str, str]
) -> None:
    owner, _, other_key = two_accounts
    record = finished_job(settings, redis, count_tokens, owner)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        other = http.get(f"/events/{record.job_id}", headers={"Authorization": f"Bearer {other_key}"})
        assert other.status_code == 404 and other.json() == {"detail": f"no job with id {record.job_id!r}"}
        for job_id in ("0" * 36, "../../etc/passwd", record.job_id + "x"):
            assert http.get(f"/events/{job_id}", headers={"Authorization": f"Bearer {other_key}"}).status_code == 404
        assert http.get(f"/events/{record.job_id}", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_job_that_ended_before_its_events_were_kept_gets_its_end_as_one_event(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, two_accounts: tuple[str, str, str]
) -> None:
    owner, owner_key, _ = two_accounts
    record = finished_job(settings, redis, count_tokens, owner)
    redis.delete(events_key(record.job_id))  # expired a day after the end, or older than this version
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        answer = http.get(f"/events/{record.job_id}", headers={"Authorization": f"Bearer {owner_key}"})
    [event] = read_events(iter(answer.text.split("\n")))
    assert (event.type, event.data["status"]) == ("job.completed", "COMPLETED")


@pytest.mark.slow
def test_a_live_stream_cut_in_the_middle_and_resumed_loses_and_repeats_nothing(
    module_settings: Settings, redis: Redis, children: Children, tmp_path: Path
) -> None:
    """A real web and worker: the client drops after the first step and reconnects with Last-Event-ID."""
    _, url = children.web(module_settings, tmp_path / "web.log")
    children.worker(module_settings, tmp_path / "worker.log")
    accounts = AccountStore(redis)
    account, key = accounts.create(f"live-{new_account()}")
    auth = {"Authorization": f"Bearer {key}"}
    params = {"prompt": "a kite in a storm", "num_frames": 31, "height": 96, "width": 160, "num_inference_steps": 8}
    job_id = httpx.post(f"{url}/generate", json=params, headers=auth).raise_for_status().json()["job_id"]

    with httpx.stream("GET", f"{url}/events/{job_id}", headers=auth, timeout=120) as first:
        seen = read_events(first.iter_lines(), stop_after=3)  # pending, running, the first step: then gone
    assert [event.type for event in seen][-1] == "job.progress"
    with httpx.stream(
        "GET", f"{url}/events/{job_id}", headers={**auth, "Last-Event-ID": seen[-1].event_id}, timeout=120
    ) as second:
        rest = read_events(second.iter_lines())

    everything = seen + rest
    stored = [entry_id.decode() for entry_id, _ in redis.xrange(events_key(job_id))]
    assert [event.event_id for event in everything] == stored  # none lost, none repeated, in order
    assert everything[-1].type == "job.completed"
    assert [e.data["progress"]["step"] for e in everything if e.type == "job.progress"] == list(range(1, 9))
    accounts.revoke(account.name)


def test_the_event_streams_client_waits_longer_than_a_blocked_read(redis_url: str) -> None:
    """redis-py 8 gives up on a read after 5 s unless told otherwise: a stream would end in a long decode."""
    kwargs = events_client(redis_url).connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] > KEEPALIVE_MS / 1000
