"""What a seed sweep costs to queue: one transaction for N jobs against N submits of one job each.

Each probe queues MAX_SWEEP_SEEDS jobs for a fresh account, as one sweep and as that many single submits
(alternating, so the machine's noise falls on both), with the queue at a given depth, then takes them off
again. Prints JSON. Usage: python -m benchmarks.sweeps [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks._common import PARAMS, embedded_queue, summary
from benchmarks.submit_latency import fill
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord
from mochi_app.sweeps import MAX_SWEEP_SEEDS


def timed_ms(queue: JobQueue, as_sweep: bool) -> float:
    """Milliseconds to queue MAX_SWEEP_SEEDS jobs for a fresh account; the jobs leave the queue afterwards."""
    account = f"probe-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    records: list[JobRecord] = (
        queue.sweep(account, {**PARAMS, "count": MAX_SWEEP_SEEDS})
        if as_sweep
        else [queue.submit(account, {**PARAMS, "seed": seed}) for seed in range(MAX_SWEEP_SEEDS)]
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    for record in records:
        queue.rq.remove(record.job_id)
        queue.cancel(record.job_id)
    return elapsed_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_queue(Path(tmp)) as queue:
        for depth in (0, 1000):
            fill(queue, depth)
            sweeps, singles = [], []
            for _ in range(args.runs):
                sweeps.append(timed_ms(queue, as_sweep=True))
                singles.append(timed_ms(queue, as_sweep=False))
            results[f"depth_{depth}"] = {
                "sweep": summary(sweeps),
                "singles": summary(singles),
                "singles_over_sweep": round(statistics.median(singles) / statistics.median(sweeps), 2),
            }
    print(json.dumps({"runs": args.runs, "jobs": MAX_SWEEP_SEEDS, "appendfsync": "always", **results}, indent=2))


if __name__ == "__main__":
    main()
