"""Jobs per minute with 1 and with 2 workers on tiny settings, and the ratio.

Prints JSON. Usage: python -m benchmarks.scale [--runs 3] [--jobs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from benchmarks._common import embedded_queue
from mochi_app.queue import JobQueue
from mochi_app.records import JobStatus
from tests.harness import Child, finished, start_worker

TINY_JOB = {"prompt": "a cat walks on the beach", "num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 4}


def jobs_per_minute(queue: JobQueue, jobs: int) -> float:
    """Submit `jobs` at once (one account each, so no limit applies) and time them until the last one ends."""
    started = time.perf_counter()
    records = [queue.submit(f"scale-{uuid.uuid4().hex[:8]}", TINY_JOB) for _ in range(jobs)]
    ended = [finished(queue, record.job_id, timeout_s=600) for record in records]
    elapsed_s = time.perf_counter() - started
    assert all(record.status is JobStatus.COMPLETED for record in ended)
    return jobs / elapsed_s * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    fleets = {1: "fleet-of-one", 2: "fleet-of-two"}  # a queue of its own for each fleet size
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_queue(Path(tmp)) as base:
        queues = {
            size: JobQueue(base.redis, replace(base.settings, queue_name=name), base.count_tokens)
            for size, name in fleets.items()
        }
        workers: list[Child] = []
        try:
            for size, queue in queues.items():
                for index in range(size):
                    log_path = Path(tmp) / f"{fleets[size]}-{index}.log"
                    # As app.py starts them: MOCHI_WORKERS tells each CPU worker its share of the cores.
                    workers.append(start_worker(queue.settings, log_path, MOCHI_WORKERS=str(size)))
            for _ in range(args.runs):  # interleaved: one fleet works at a time, and noise falls on both
                for size, queue in queues.items():
                    rates[size].append(jobs_per_minute(queue, args.jobs))
        finally:
            for worker in workers:
                worker.stop()
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        json.dumps(
            {
                "runs": args.runs,
                "jobs_per_run": args.jobs,
                "params": TINY_JOB,
                "one_worker_jobs_per_min": round(one, 1),
                "two_workers_jobs_per_min": round(two, 1),
                "ratio": round(two / one, 2),
                "all_runs": {str(count): [round(rate, 1) for rate in values] for count, values in rates.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
