"""What a submit costs as the queue grows: validation, finding the fair place, one fsynced transaction.

The backlog is written in bulk, as 50 accounts' turns would leave it (and, where the queue keeps a
fair-share index, indexed as their submits would have), then each probe is one real submit from a fresh
account. Prints JSON. Usage: python -m benchmarks.submit_latency [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import PARAMS, embedded_queue, probe_ms, summary
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, Progress
from mochi_app.schemas import GenerationRequest

ACCOUNTS = 50
BATCH = 500


def fill(queue: JobQueue, depth: int) -> None:
    """Waiting jobs until `depth` wait, round-robin over ACCOUNTS accounts, written in bulk."""
    request = GenerationRequest.parse(PARAMS, queue.settings.limits)
    quote = queue.estimate(request)[0] if hasattr(queue, "estimate") else None
    now = time.time()
    while (count := queue.rq.count) < depth:
        with queue.redis.pipeline() as pipe:
            pipe.multi()
            for index in range(count, min(depth, count + BATCH)):
                extra: dict[str, Any] = {"quote": quote} if quote is not None else {}
                record = JobRecord(
                    job_id=str(uuid.uuid4()),
                    account_id=f"backlog-{index % ACCOUNTS}",
                    request=request,
                    num_frames=request.rendered_num_frames,
                    created_at=now,
                    progress=Progress(total=request.num_inference_steps),
                    **extra,
                )
                queue.store.create(record, pipe)
                queue.push(pipe, record.job_id)
                if quote is not None:  # the account's (index // ACCOUNTS + 1)-th job, as its tag would say
                    from mochi_app.fair_share import Placement

                    tag = (index // ACCOUNTS) * quote.run_s
                    queue.fair.add(pipe, record, Placement(tag, tag + quote.run_s, 0.0, None, index), None)
            pipe.execute()


def submit_ms(queue: JobQueue, runs: int) -> list[float]:
    """Milliseconds per submit from a fresh account, with the queue as it is (nothing takes jobs)."""
    return [probe_ms(queue, f"probe-{uuid.uuid4().hex[:8]}") for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_queue(Path(tmp)) as queue:
        for depth in (0, 1000, 10_000):
            fill(queue, depth)
            results[f"depth_{depth}"] = summary(submit_ms(queue, args.runs))
    print(json.dumps({"runs": args.runs, "appendfsync": "always", **results}, indent=2))


if __name__ == "__main__":
    main()
