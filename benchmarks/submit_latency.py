"""What a submit costs as the queue grows: validation, the fair-share walk, one fsynced transaction.

Prints JSON. Usage: python -m benchmarks.submit_latency [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from redis import Redis

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.redis_server import EmbeddedServer
from mochi_app.tokens import TokenCounter

PARAMS = {"prompt": "a cat walks on the beach", "num_frames": 31, "height": 96, "width": 160}
ACCOUNTS = 50


def submit_ms(queue: JobQueue, runs: int) -> list[float]:
    """Milliseconds per submit from a fresh account, with the queue as it is (nothing takes jobs)."""
    seconds = []
    for run in range(runs):
        started = time.perf_counter()
        record = queue.submit(f"probe-{run}", PARAMS)
        seconds.append((time.perf_counter() - started) * 1000)
        queue.rq.remove(record.job_id)  # keep the depth as it was
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "redis")
        base = Settings(data_dir=Path(tmp), redis_url=server.start(), model="tiny")
        settings = replace(base, max_pending_jobs=10_000, submits_per_minute=1_000_000)
        try:
            queue = JobQueue(Redis.from_url(settings.redis_url or ""), settings, TokenCounter.tiny())
            for depth in (0, 100, 1000):
                while queue.rq.count < depth:
                    queue.submit(f"backlog-{queue.rq.count % ACCOUNTS}", PARAMS)
                latencies = submit_ms(queue, args.runs)
                results[f"depth_{depth}"] = {
                    "p50_ms": round(statistics.median(latencies), 2),
                    "max_ms": round(max(latencies), 2),
                }
        finally:
            server.stop()
    print(json.dumps({"runs": args.runs, "appendfsync": "always", **results}, indent=2))


if __name__ == "__main__":
    main()
