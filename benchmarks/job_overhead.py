"""What the service adds around the model: one job through queue and worker vs the same render in-process.

Direct and queued runs alternate (direct, queued, direct, queued, ...) so the machine's drift falls
on both alike; the overhead is the median of the per-pair differences (queued - direct). Only one
process renders at a time: the worker idles on Redis during a direct run, and during a queued run
this process sleeps until a job record is written (its CPU cost is reported). Both load the model
through `load_renderer` with the same settings, so both get the same torch threads; checked.
Each run also records how long its process waited for a core (other work on the machine), and the
overhead is given again over the half of the pairs that waited least.

Prints JSON. Usage: python -m benchmarks.job_overhead [--runs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import PubSub
from rq import Worker

from benchmarks._common import embedded_settings
from mochi_app.config import Settings
from mochi_app.loader import load_renderer
from mochi_app.queue import JobQueue
from mochi_app.records import JobStatus
from mochi_app.renderer import MochiRenderer
from mochi_app.schemas import GenerationRequest
from mochi_app.store import job_key
from mochi_app.tokens import TokenCounter
from mochi_app.video import write_mp4
from tests.harness import Child, start_worker

PARAMS = {"prompt": "a cat walks on the beach", "num_frames": 31, "height": 96, "width": 160, "num_inference_steps": 8}
JOB_TIMEOUT_S = 300
IDLE_POLL_S = 0.005
# The target: at most 2% of the direct call or 150 ms, whichever is larger.
TARGET_RATIO, TARGET_FLOOR_S = 0.02, 0.150
PHASES = ("queue_wait_s", "denoise_s", "decode_s", "encode_s", "rest_s")
WORKER_THREADS = re.compile(r"CPU rendering with (\d+) torch thread")


def cpu_s(pid: int) -> float:
    """CPU seconds used so far by process `pid` and the children it has waited for (ffmpeg), in 10 ms ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(ticks) for ticks in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def cpu_wait_s(pid: int) -> float:
    """Seconds the threads of process `pid` have spent ready to run but waiting for a core (schedstat):
    the time other work on the machine took from it."""
    waited_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            waited_ns += int((task / "schedstat").read_text().split()[1])
    return waited_ns / 1e9


def server_cpu_s(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def listen_for_records(redis: Redis) -> PubSub:
    """A subscription that hears every write to a job record: waiting on it costs a wake-up per write
    (about ten a job), where a GET every 5 ms cost this process 2-4% of a core while the worker rendered."""
    redis.config_set("notify-keyspace-events", "K$")  # keyspace events for string commands (SET)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    pubsub.psubscribe(f"__keyspace@{db}__:{job_key('*')}")
    return pubsub


def worker_threads(worker: Child) -> int:
    found = WORKER_THREADS.search(worker.log)
    if found is None:
        raise RuntimeError(f"the worker did not log its torch threads:\n{worker.log}")
    return int(found.group(1))


@dataclass
class Bench:
    """The model loaded in this process, and a worker process idling on the same queue."""

    renderer: MochiRenderer
    queue: JobQueue
    worker: Child
    records: PubSub

    def direct(self, seed: int) -> dict[str, float]:
        """Phases of render + MP4 encode in this process, the model already loaded, in seconds."""
        request = GenerationRequest.model_validate({**PARAMS, "seed": seed})
        cpu_started, wait_started = cpu_s(os.getpid()), cpu_wait_s(os.getpid())
        started = time.perf_counter()
        rendering = self.renderer.render(request, on_step=lambda step, total: None)
        encode_started = time.perf_counter()
        write_mp4(rendering.frames, self.queue.settings.videos_dir / f"direct-{seed}.mp4", request.fps)
        finished = time.perf_counter()
        encode_s = finished - encode_started
        phases = {"denoise_s": rendering.denoise_s, "decode_s": rendering.decode_s, "encode_s": encode_s}
        total_s = finished - started
        return {
            "queue_wait_s": 0.0,
            **phases,
            "rest_s": total_s - sum(phases.values()),
            "total_s": total_s,
            "cpu_s": cpu_s(os.getpid()) - cpu_started,
            "cpu_wait_s": cpu_wait_s(os.getpid()) - wait_started,
        }

    def queued(self, seed: int) -> dict[str, float]:
        """Phases of one job sent through Redis to the idle worker, from its record, in seconds; `rest_s`
        is what the record's timings leave out of its total (the RUNNING write, reading the record to
        finish it, the prompt check, frames to 8-bit). Returns once the worker is idle again, so RQ's
        bookkeeping after the job never competes with the next direct run."""
        pid = self.worker.process.pid
        cpu_started, wait_started, server_cpu_started = cpu_s(pid), cpu_wait_s(pid), server_cpu_s(self.queue.redis)
        job = self.queue.submit(f"bench-{uuid.uuid4().hex[:6]}", {**PARAMS, "seed": seed})
        waiter_cpu_started = time.process_time()
        deadline = time.monotonic() + JOB_TIMEOUT_S
        # Read the record after every write to any job record, and every second in case a wake-up was missed.
        while not (record := self.queue.store.get(job.job_id)) or not record.status.is_terminal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job.job_id} did not finish in {JOB_TIMEOUT_S} s")
            self.records.get_message(timeout=1.0)
        waiter_cpu_s = time.process_time() - waiter_cpu_started
        if record.status is not JobStatus.COMPLETED:
            raise RuntimeError(f"job {record.job_id} ended {record.status}: {record.error}")
        while not self.worker_idle():  # RQ's own bookkeeping after the job: a few milliseconds
            time.sleep(IDLE_POLL_S)
        timings = record.timings
        phases = {name: getattr(timings, name) or 0.0 for name in PHASES if name != "rest_s"}
        total_s = timings.total_s or 0.0
        return {
            **phases,
            "rest_s": total_s - sum(phases.values()),
            "total_s": total_s,
            "cpu_s": cpu_s(pid) - cpu_started,
            "cpu_wait_s": cpu_wait_s(pid) - wait_started,
            "waiter_cpu_s": waiter_cpu_s,
            "server_cpu_s": server_cpu_s(self.queue.redis) - server_cpu_started,
        }

    def worker_idle(self) -> bool:
        (worker,) = Worker.all(queue=self.queue.rq)
        return worker.connection.hget(worker.key, "state") in (b"idle", "idle")


def interleaved(settings: Settings, runs: int, log_path: Path) -> dict[str, Any]:
    """Alternate direct and queued runs, after one untimed pair (each process's first MP4 imports
    imageio_ffmpeg and looks for ffmpeg; warm-up renders write none)."""
    import torch

    renderer = load_renderer(settings)  # sets this process's torch threads as the worker's call does
    renderer.warm_up()
    worker = start_worker(settings, log_path)
    try:
        threads = {"direct": torch.get_num_threads(), "worker": worker_threads(worker)}
        if threads["direct"] != threads["worker"]:
            raise RuntimeError(f"torch threads differ, the comparison would be unfair: {threads}")
        with Redis.from_url(settings.redis_url or "") as redis, listen_for_records(redis) as records:
            bench = Bench(renderer, JobQueue(redis, settings, TokenCounter.tiny()), worker, records)
            bench.direct(seed=0)
            bench.queued(seed=0)
            pairs = [(bench.direct(seed=run), bench.queued(seed=run)) for run in range(1, runs + 1)]
    finally:
        worker.stop()
    return {"threads": threads, "pairs": pairs}


def median_ci95(values: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval for the median: order statistics k and n + 1 - k."""
    ordered, n = sorted(values), len(values)
    k, below = 0, 0.0
    while below + math.comb(n, k) / 2**n <= 0.025:
        below += math.comb(n, k) / 2**n
        k += 1
    return (ordered[0], ordered[-1]) if k == 0 else (ordered[k - 1], ordered[n - k])


def medians(runs: list[dict[str, float]], names: Iterable[str]) -> dict[str, float]:
    return {name: round(statistics.median(run[name] for run in runs), 4) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="direct/queued pairs, after one untimed pair")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine shows here, and in the spread of the differences
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as folder, embedded_settings(Path(folder)) as settings:
        result = interleaved(settings, args.runs, Path(folder) / "worker.log")
    load_after = os.getloadavg()[0]
    direct = [d for d, _ in result["pairs"]]
    queued = [q for _, q in result["pairs"]]
    differences = [{name: q[name] - d[name] for name in d} for d, q in result["pairs"]]
    direct_s = statistics.median(d["total_s"] for d in direct)
    queued_s = statistics.median(q["total_s"] for q in queued)
    overhead_s = statistics.median(d["total_s"] for d in differences)
    target_s = max(TARGET_RATIO * direct_s, TARGET_FLOOR_S)
    per_job = (*PHASES, "total_s", "cpu_s", "cpu_wait_s")
    # The pairs least disturbed by other work: selected on both runs alike, so no side is favoured.
    quiet = sorted(result["pairs"], key=lambda pair: max(run["cpu_wait_s"] for run in pair))[: max(1, args.runs // 2)]
    quiet_differences = [q["total_s"] - d["total_s"] for d, q in quiet]
    print(
        json.dumps(
            {
                "params": PARAMS,
                "runs": args.runs,
                "torch_threads": result["threads"],
                "cores": os.cpu_count(),
                "load_average_1m": [round(load_before, 2), round(load_after, 2)],
                "direct_median_s": round(direct_s, 4),
                "queued_median_s": round(queued_s, 4),
                "overhead_s": round(overhead_s, 4),
                "overhead_ratio": round(overhead_s / direct_s, 4),
                "overhead_ci95_s": [round(bound, 4) for bound in median_ci95([d["total_s"] for d in differences])],
                "target_s": round(target_s, 4),
                "target_met": overhead_s <= target_s,
                "differences_s": sorted(round(d["total_s"], 3) for d in differences),
                "quiet_half": {
                    "pairs": len(quiet),
                    "max_cpu_wait_s": round(max(run["cpu_wait_s"] for pair in quiet for run in pair), 4),
                    "overhead_s": round(statistics.median(quiet_differences), 4),
                    "overhead_ci95_s": [round(bound, 4) for bound in median_ci95(quiet_differences)],
                },
                "pickup_p50_ms": round(statistics.median(q["queue_wait_s"] for q in queued) * 1000, 2),
                "direct_median": medians(direct, per_job),
                "queued_median": medians(queued, per_job),
                "difference_median": medians(differences, per_job),
                "waiter_cpu_ms_per_job": round(statistics.median(q["waiter_cpu_s"] for q in queued) * 1000, 2),
                "server_cpu_ms_per_job": round(statistics.median(q["server_cpu_s"] for q in queued) * 1000, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
