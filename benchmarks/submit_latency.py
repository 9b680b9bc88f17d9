"""What a submit costs as the queue grows: validation, the fair-share walk, one fsynced transaction.

Prints JSON. Usage: python -m benchmarks.submit_latency [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks._common import PARAMS, embedded_queue, probe_ms, summary
from mochi_app.queue import JobQueue

ACCOUNTS = 50


def submit_ms(queue: JobQueue, runs: int) -> list[float]:
    """Milliseconds per submit from a fresh account, with the queue as it is (nothing takes jobs)."""
    return [probe_ms(queue, f"probe-{run}") for run in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_queue(Path(tmp)) as queue:
        for depth in (0, 1000, 10_000):
            while queue.rq.count < depth:
                queue.submit(f"backlog-{queue.rq.count % ACCOUNTS}", PARAMS)
            results[f"depth_{depth}"] = summary(submit_ms(queue, args.runs))
    print(json.dumps({"runs": args.runs, "appendfsync": "always", **results}, indent=2))


if __name__ == "__main__":
    main()
