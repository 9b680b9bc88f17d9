"""Object storage and snapshots: a finished video's upload to two real S3 servers on loopback, and a snapshot
of N jobs taken, encoded and restored onto an empty server.

Prints JSON. Usage: python -m benchmarks.storage [--runs 5] [--mb 2,40] [--jobs 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from benchmarks._common import completed_record, embedded_queue
from mochi_app.config import BucketURL
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord
from mochi_app.redis_server import EmbeddedServer
from mochi_app.schemas import GenerationRequest
from mochi_app.snapshots import Snapshot, restore_snapshot, take_snapshot
from mochi_app.storage import BucketStorage
from mochi_app.store import JobStore
from tests.s3_servers import KINDS, start_s3_server

BATCH = 1000
WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "red",
    "blue",
    "slow",
    "fast",
    "light",
    "storm",
    "harbour",
    "lighthouse",
    "dusk",
    "dawn",
    "waves",
    "city",
    "neon",
    "rain",
    "forest",
    "river",
    "mountain",
    "paper",
    "boat",
    "flying",
    "over",
    "under",
    "through",
    "golden",
    "hour",
    "cinematic",
    "close-up",
    "wide",
    "shot",
    "drone",
    "camera",
    "pans",
]


def upload_figures(root: Path, sizes_mb: list[int], runs: int) -> dict[str, Any]:
    """Median seconds and MB/s of `BucketStorage.keep` per server and size, the servers taking turns."""
    servers = [start_s3_server(kind, root / kind, bucket="bench") for kind in KINDS]
    record = completed_record("bench", GenerationRequest(prompt="p", seed=1), time.time())
    try:
        figures: dict[str, Any] = {}
        for size_mb in sizes_mb:
            payload = os.urandom(size_mb * 2**20)  # a noisy video barely compresses
            times: dict[str, list[float]] = {server.kind: [] for server in servers}
            for _ in range(runs):
                for server in servers:
                    storage = BucketStorage(BucketURL("bench", "videos/"), root / "staging", 300, server.client())
                    staged = storage.staging_path(record)
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    staged.write_bytes(payload)
                    started = time.perf_counter()
                    storage.keep(staged, record)
                    times[server.kind].append(time.perf_counter() - started)
            medians = {kind: statistics.median(seconds) for kind, seconds in times.items()}
            figures[f"{size_mb}_mb"] = {
                kind: {"median_s": round(median, 4), "mb_per_s": round(size_mb / median, 1)}
                for kind, median in medians.items()
            }
        return figures
    finally:
        for server in servers:
            server.stop()


def fill(store: JobStore, count: int) -> None:
    """`count` finished jobs of 50 accounts, each prompt its own (as people write them, they compress less)."""
    started = time.time() - count
    for first in range(0, count, BATCH):
        with store.redis.pipeline(transaction=False) as pipe:
            for index in range(first, min(first + BATCH, count)):
                words = " ".join(random.choice(WORDS) for _ in range(random.randint(8, 40)))
                request = GenerationRequest(prompt=words, seed=random.randrange(2**32))
                record: JobRecord = completed_record(f"account-{index % 50}", request, started + index)
                store.create(record, pipe)
            pipe.execute()


def snapshot_figures(root: Path, jobs: int, runs: int) -> dict[str, Any]:
    """Seconds to take and encode a snapshot of `jobs` finished jobs, its size, and seconds to restore it."""
    with embedded_queue(root / "full") as queue:
        fill(queue.store, jobs)
        take_s, encoded = [], b""
        for _ in range(runs):
            started = time.perf_counter()
            encoded = take_snapshot(queue.redis, root).encode()
            take_s.append(time.perf_counter() - started)
    restore_s = []
    for run in range(runs):
        server = EmbeddedServer(root / f"empty-{run}")
        try:
            with Redis.from_url(server.start()) as redis:
                snapshot = Snapshot.decode(encoded)
                started = time.perf_counter()
                restore_snapshot(JobQueue(redis, queue.settings), snapshot, root / f"data-{run}")
                restore_s.append(time.perf_counter() - started)
        finally:
            server.stop()
    return {
        "jobs": jobs,
        "take_and_encode_median_s": round(statistics.median(take_s), 3),
        "encoded_bytes": len(encoded),
        "bytes_per_job": round(len(encoded) / max(1, jobs), 1),
        "restore_median_s": round(statistics.median(restore_s), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", default="2,40", help="video sizes in MiB, comma-separated")
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    sizes = [int(part) for part in args.mb.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="mochi-bench-storage-") as folder:
        root = Path(folder)
        figures = {
            "runs": args.runs,
            "upload": upload_figures(root / "s3", sizes, args.runs),
            "snapshot": snapshot_figures(root / "snapshot", args.jobs, args.runs),
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
