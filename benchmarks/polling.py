"""Many clients polling their jobs' status at once: REST GET /status/{id}, then the Gradio /status event, twice.

Each client has one request in flight at a time, and its first request falls in its own slot of
the first interval, so the load starts even. `--pacing` says when it sends the next one:
- `timer` (default), as the page's `gr.Timer` does (a browser `setInterval` whose ticks are
  dropped while the previous event is pending): at its next tick, `--interval-s` after the last,
  or the first tick after the answer when the answer came late;
- `sleep`, as a `while True: predict(); sleep(1)` gradio_client script does: `--interval-s`
  after the answer. A slow moment then shifts every client it delayed to the same later
  instant, so the load comes in bursts from then on.

Every client is an account of its own (an API key, sent as `Authorization: Bearer KEY`) polling
one job of its own: half the jobs are PENDING in the queue (no worker runs, so each answer also
reads the job's queue position), half are COMPLETED. The server is a real
`python -m mochi_app serve` on an embedded Valkey; the clients are asyncio tasks on httpx in this
process, which shares the machine's cores with the server.

The Gradio phases call the named event over Gradio's plain HTTP API: POST /gradio_api/call/status
with {"data": [job_id]}, then read the event stream /gradio_api/call/status/{event_id} until
`event: complete`; one poll's latency is both requests. `gradio` sends no session, as `curl` does,
so Gradio opens (and keeps) a new session for every call; `gradio_session` sends the client's own
`session_hash` on every call, as a gradio_client `Client` keeps one session for all its calls.
A poll is an error when it raises, answers other than 2xx, or answers with anything but the job.

Each phase runs on a web process of its own (a phase without sessions leaves thousands behind,
which would slow the next phase's garbage collections), started for it; each client first polls
once untimed (it opens the client's connection, and the first polls pay the server's first-call
costs); then every poll is timed for `--duration-s`. A run is the three phases in turn: `rest`,
`gradio_session`, `gradio`; `--runs N` repeats them and reports each run and the median of the
runs' p99s. Beside the latencies: the CPU seconds the server, this process (the clients) and
everything else on the machine used during the timed part, and the server's resident memory
after it.

Prints JSON. Usage: python -m benchmarks.polling [--runs 1] [--clients 200] [--duration-s 20] [--interval-s 1]
[--pacing timer|sleep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import ssl
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import httpx
from redis import Redis

from benchmarks._common import PARAMS, completed_record, embedded_settings, summary
from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.schemas import GenerationRequest
from mochi_app.tokens import TokenCounter
from tests.harness import start_web

REQUEST_TIMEOUT_S = 30.0


class WrongAnswer(Exception):
    """A 2xx answer that is not the polled job's status."""


@dataclass(frozen=True)
class Poller:
    """One client: its account's API key and the job it polls."""

    key: str
    job_id: str
    session_hash: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


Poll = Callable[[httpx.AsyncClient, Poller], Awaitable[None]]
Pacing = Literal["timer", "sleep"]


@dataclass
class Tally:
    """What one phase saw: every poll's latency (errors included), and the errors by kind."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def create_pollers(settings: Settings, clients: int) -> list[Poller]:
    """`clients` accounts with one job each: even ones PENDING in the queue, odd ones COMPLETED."""
    with Redis.from_url(settings.redis_url or "") as redis:
        accounts = AccountStore(redis)
        queue = JobQueue(redis, settings, TokenCounter.tiny())
        pollers = []
        for index in range(clients):
            account, key = accounts.create(f"poll-{index:04d}-{uuid.uuid4().hex[:6]}")
            job_id = queue.submit(account.name, PARAMS).job_id if index % 2 == 0 else completed_job(queue, account.name)
            pollers.append(Poller(key, job_id))
        return pollers


def completed_job(queue: JobQueue, account_id: str) -> str:
    """A finished job's record, written straight to the store: no worker runs here."""
    record = completed_record(account_id, GenerationRequest.model_validate({**PARAMS, "seed": 1}), time.time() - 58)
    queue.store.create(record)
    return record.job_id


async def rest_poll(client: httpx.AsyncClient, poller: Poller) -> None:
    response = await client.get(f"/status/{poller.job_id}", headers=poller.headers)
    response.raise_for_status()
    if response.json().get("job_id") != poller.job_id:
        raise WrongAnswer("another job")


async def gradio_poll(client: httpx.AsyncClient, poller: Poller) -> None:
    """As curl calls it: each call without a session, so Gradio opens a new one for it."""
    await call_status(client, poller, {"data": [poller.job_id]})


async def gradio_session_poll(client: httpx.AsyncClient, poller: Poller) -> None:
    """With the client's own session on every call, as a gradio_client Client keeps one session."""
    await call_status(client, poller, {"data": [poller.job_id], "session_hash": poller.session_hash})


async def call_status(client: httpx.AsyncClient, poller: Poller, body: dict[str, Any]) -> None:
    """The /status event over Gradio's HTTP API: POST the call, then read its event stream to the end."""
    call = await client.post("/gradio_api/call/status", json=body, headers=poller.headers)
    call.raise_for_status()
    stream_path = f"/gradio_api/call/status/{call.json()['event_id']}"
    async with client.stream("GET", stream_path, headers=poller.headers) as stream:
        stream.raise_for_status()
        event = None
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in {"complete", "error"}:
                data = json.loads(line.removeprefix("data: "))
                if event == "error":
                    raise WrongAnswer("event: error")
                if not (isinstance(data, list) and data and data[0].get("job_id") == poller.job_id):
                    raise WrongAnswer("another job")
                return
    raise WrongAnswer("stream ended before event: complete")


def error_kind(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, WrongAnswer):
        return str(exc)
    return type(exc).__name__


@dataclass(frozen=True)
class Schedule:
    """How long a phase lasts, and when a client sends its next request (see `--pacing`)."""

    duration_s: float
    interval_s: float
    pacing: Pacing = "timer"

    def next_request_at(self, first_at: float, answered_at: float) -> float:
        if self.pacing == "sleep":
            return answered_at + self.interval_s
        ticks_so_far = math.floor((answered_at - first_at) / self.interval_s)
        return first_at + (ticks_so_far + 1) * self.interval_s


async def one_client(
    client: httpx.AsyncClient, poller: Poller, poll: Poll, tally: Tally, *, schedule: Schedule, first_at: float
) -> None:
    """From `first_at` for the schedule's duration: one request, wait for the answer, wait for its next time, repeat."""
    request_at, end_at = first_at, first_at + schedule.duration_s
    while request_at < end_at:
        await asyncio.sleep(request_at - time.perf_counter())
        started = time.perf_counter()
        try:
            await poll(client, poller)
        except (httpx.HTTPError, WrongAnswer, ValueError, KeyError) as exc:
            tally.errors[error_kind(exc)] += 1
        answered_at = time.perf_counter()
        tally.latencies_ms.append((answered_at - started) * 1000)
        request_at = schedule.next_request_at(first_at, answered_at)


async def spread(clients: list[httpx.AsyncClient], pollers: list[Poller], poll: Poll, schedule: Schedule) -> Tally:
    """Every poller polls for `schedule.duration_s`, their first requests spread evenly over one interval."""
    tally = Tally()
    started = time.perf_counter()
    spacing_s = schedule.interval_s / len(pollers)
    await asyncio.gather(
        *(
            one_client(client, poller, poll, tally, schedule=schedule, first_at=started + index * spacing_s)
            for index, (client, poller) in enumerate(zip(clients, pollers, strict=True))
        )
    )
    return tally


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine has used so far: all but idle and I/O wait (Linux /proc)."""
    ticks = [int(tick) for tick in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def p99(latencies_ms: list[float]) -> float:
    if len(latencies_ms) < 2:
        return latencies_ms[0]
    return statistics.quantiles(latencies_ms, n=100, method="inclusive")[98]


def rss_mb(pid: int) -> float:
    """A process's resident memory now (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")


async def measure(url: str, server_pid: int, pollers: list[Poller], poll: Poll, schedule: Schedule) -> dict[str, Any]:
    """One phase: its polls, errors, latency percentiles, rate, the CPU each side used, the server's memory after.

    Each client first polls once, untimed (it opens the client's connection); then all poll for the phase's time.
    """
    # Each client its own connection, as each page or script has: one request in flight at a time.
    limits, tls = httpx.Limits(max_connections=1), ssl.create_default_context()  # one TLS set-up, not 200
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S, verify=tls)
            )
            for _ in pollers
        ]
        await spread(clients, pollers, poll, replace(schedule, duration_s=schedule.interval_s))
        server_cpu, client_cpu, machine_cpu = cpu_s(server_pid), time.process_time(), machine_cpu_s()
        tally = await spread(clients, pollers, poll, schedule)
        server_cpu, client_cpu = cpu_s(server_pid) - server_cpu, time.process_time() - client_cpu
        other_cpu = machine_cpu_s() - machine_cpu - server_cpu - client_cpu
    requests = len(tally.latencies_ms)
    return {
        "requests": requests,
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(tally.errors),
        **summary(tally.latencies_ms),
        "p99_ms": round(p99(tally.latencies_ms), 2),
        "requests_per_s": round(requests / schedule.duration_s, 1),  # polls started per second of the phase
        "server_cpu_s": round(server_cpu, 2),
        "client_cpu_s": round(client_cpu, 2),
        # Valkey's share, and whatever else ran meanwhile: this machine's two cores are shared.
        "other_cpu_s": round(other_cpu, 2),
        "server_rss_mb": round(rss_mb(server_pid), 1),
    }


def measure_on_a_fresh_server(
    settings: Settings, log_path: Path, pollers: list[Poller], poll: Poll, schedule: Schedule
) -> dict[str, Any]:
    """One phase on its own web process; `measure`'s untimed first polls also pay the server's first-call costs."""
    web, url = start_web(settings, log_path)
    try:
        return asyncio.run(measure(url, web.process.pid, pollers, poll, schedule))
    finally:
        web.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--pacing", choices=get_args(Pacing), default="timer")
    args = parser.parse_args()
    schedule = Schedule(args.duration_s, args.interval_s, args.pacing)
    phases: dict[str, Poll] = {"rest": rest_poll, "gradio_session": gradio_session_poll, "gradio": gradio_poll}
    per_run: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_settings(Path(tmp)) as settings:
        pollers = create_pollers(settings, args.clients)
        for _ in range(args.runs):
            for name, poll in phases.items():
                log_path = Path(tmp) / f"web-{name}.log"
                per_run[name].append(measure_on_a_fresh_server(settings, log_path, pollers, poll, schedule))
    figures = {
        name: {
            "p99_ms_median": round(statistics.median(run["p99_ms"] for run in runs), 2),
            "errors": sum(run["errors"] for run in runs),
            "per_run": runs,
        }
        for name, runs in per_run.items()
    }
    jobs = {"PENDING": (args.clients + 1) // 2, "COMPLETED": args.clients // 2}
    settings_shown = {
        "clients": args.clients,
        "duration_s": args.duration_s,
        "interval_s": args.interval_s,
        "pacing": args.pacing,
    }
    print(json.dumps({"runs": args.runs, **settings_shown, "jobs": jobs, **figures}, indent=2))


if __name__ == "__main__":
    main()
