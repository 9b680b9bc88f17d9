"""An account's gallery as it grows: the first page for 100 jobs against 10,000, in-process and over REST.

Prints JSON. Usage: python -m benchmarks.gallery [--runs 200] [--jobs 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from benchmarks._common import completed_record, embedded_queue, summary
from mochi_app.accounts import LOCAL_ACCOUNT
from mochi_app.queue import JobQueue
from mochi_app.schemas import GenerationRequest
from mochi_app.store import JobStore
from mochi_app.studio import Studio
from tests.harness import start_web

PAGE_SIZE = 20
SMALL_ACCOUNT_JOBS = 100  # a full page too, so the two pages differ only in the account's size
BATCH = 1000


def fill(store: JobStore, account_id: str, count: int) -> None:
    """`count` finished jobs for `account_id`, written straight to the store in batches."""
    request = GenerationRequest(prompt="a cat walks on the beach", seed=1)
    started = time.time() - count
    for first in range(0, count, BATCH):
        with store.redis.pipeline(transaction=False) as pipe:
            for index in range(first, min(first + BATCH, count)):
                record = completed_record(account_id, request, started + index + 0.5)
                store.create(record, pipe)
            pipe.execute()


def first_page_ms(studio: Studio, account_id: str, expected: int) -> float:
    """Milliseconds for the account's first page through the Studio, as REST and the page ask for it."""
    started = time.perf_counter()
    page = studio.jobs(account_id, PAGE_SIZE)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert len(page.jobs) == expected
    return elapsed_ms


def rest_first_page_ms(url: str, runs: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(f"/jobs/{LOCAL_ACCOUNT}", params={"limit": PAGE_SIZE})
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and len(response.json()["jobs"]) == PAGE_SIZE
    return latencies


def measure(queue: JobQueue, runs: int, jobs: int, directory: Path) -> dict[str, object]:
    small = f"small-{uuid.uuid4().hex[:6]}"
    fill(queue.store, small, SMALL_ACCOUNT_JOBS)
    fill(queue.store, LOCAL_ACCOUNT, jobs)  # loopback calls act for `local`: the big account is REST's
    studio = Studio(queue.redis, queue.settings)
    big_ms, small_ms = [], []
    for _ in range(runs):  # interleaved, so the machine's noise falls on both alike
        small_ms.append(first_page_ms(studio, small, PAGE_SIZE))
        big_ms.append(first_page_ms(studio, LOCAL_ACCOUNT, PAGE_SIZE))
    web, url = start_web(queue.settings, directory / "web.log")
    try:
        rest_ms = rest_first_page_ms(url, runs)
    finally:
        web.stop()
    big, little = summary(big_ms), summary(small_ms)
    return {
        f"studio_{SMALL_ACCOUNT_JOBS}_jobs": little,
        f"studio_{jobs}_jobs": big,
        "big_vs_small_p50": round(big["p50_ms"] / little["p50_ms"], 2),
        f"rest_{jobs}_jobs": summary(rest_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_queue(Path(tmp)) as queue:
        figures = measure(queue, args.runs, args.jobs, Path(tmp))
    print(json.dumps({"runs": args.runs, "page_size": PAGE_SIZE, **figures}, indent=2))


if __name__ == "__main__":
    main()
