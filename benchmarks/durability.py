"""What a durable acknowledgement costs a submit: appendfsync always vs everysec plus WAITAOF.

Three servers run at once, one per variant, each with an empty queue:
- always: `appendfsync always` and a plain submit (what the product does);
- everysec_waitaof: `appendfsync everysec`, then `WAITAOF 1 0` inside the timed region;
- everysec: `appendfsync everysec` and no wait; not durable, a reference only.
Each round submits once to every server, starting with a different one each round, so the
machine's noise falls on all variants alike.

Prints JSON. Usage: python -m benchmarks.durability [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchmarks._common import embedded_queue, probe_ms, summary
from mochi_app.queue import JobQueue

WAITAOF_TIMEOUT_MS = 5000  # everysec fsyncs at least once a second; far longer means something is wrong


def wait_for_local_fsync(queue: JobQueue) -> None:
    """Block until the server says this connection's writes are fsynced to the local append-only file.

    Only as good as the server's word: Valkey 8.1.8 under everysec answers 1 before its once-a-second
    fsync has run (the premature-reply bug redis/redis#13793 fixed in Redis), see docs/PERFORMANCE.md.
    """
    reply = queue.redis.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)  # type: ignore[no-untyped-call]
    if reply[0] != 1:
        raise RuntimeError(f"WAITAOF 1 0 {WAITAOF_TIMEOUT_MS} answered {reply!r}: the submit was not fsynced")


# name: (appendfsync policy, what runs after the submit inside the timed region)
VARIANTS: dict[str, tuple[str, Callable[[JobQueue], None] | None]] = {
    "always": ("always", None),
    "everysec_waitaof": ("everysec", wait_for_local_fsync),
    "everysec": ("everysec", None),
}


def interleaved_ms(queues: dict[str, JobQueue], runs: int) -> dict[str, list[float]]:
    """Milliseconds per submit for each variant, one submit per variant per round."""
    names = list(queues)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # untimed: the first submit also opens the connection
        probe_ms(queues[name], "warm-up", VARIANTS[name][1])
    for run in range(runs):
        first = run % len(names)
        for name in names[first:] + names[:first]:
            latencies[name].append(probe_ms(queues[name], f"probe-{run}", VARIANTS[name][1]))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, ExitStack() as servers:
        queues = {
            name: servers.enter_context(embedded_queue(Path(tmp) / name, appendfsync))
            for name, (appendfsync, _) in VARIANTS.items()
        }
        latencies = interleaved_ms(queues, args.runs)
        server_info = queues["always"].redis.info("server")
    results = {name: summary(ms) for name, ms in latencies.items()}
    for figures in results.values():
        figures["p50_vs_always"] = round(figures["p50_ms"] / results["always"]["p50_ms"], 2)
    version = server_info.get("valkey_version") or server_info.get("redis_version")
    print(json.dumps({"runs": args.runs, "server_version": version, "queue_depth": 0, "variants": results}, indent=2))


if __name__ == "__main__":
    main()
