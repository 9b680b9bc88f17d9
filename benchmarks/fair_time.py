"""Fair GPU time on the tiny model with a real worker: quote accuracy, the wait estimate, fair shares.

1. Calibration: three rounds over a grid of 12 shapes (frames x size x steps), one job at a time.
2. Quote accuracy: two more jobs per shape, each quoted just before it is submitted alone; the error is
   |actual run - estimated_run_s| / actual run.
3. Wait: 9 mixed jobs from three accounts at once; each one's `eta_start_s` read right after, against
   when it really started.
4. Fair share: three accounts backlogged at once (heavy, light and mixed jobs); each account's share of
   the worker's time until the first of them has nothing left waiting.

Prints JSON. Usage: python -m benchmarks.fair_time
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis import Redis

from benchmarks._common import embedded_settings
from mochi_app.records import JobRecord
from mochi_app.studio import Studio
from tests.harness import GENEROUS, finished, start_worker

GRID = [
    {"num_frames": frames, "height": side, "width": side, "num_inference_steps": steps}
    for frames, side, steps in itertools.product((7, 19, 31), (64, 128), (2, 8))
]
CALIBRATION_ROUNDS = 3
MEASURED_PER_SHAPE = 2


def run_alone(studio: Studio, account: str, shape: dict[str, int]) -> tuple[float, JobRecord]:
    quoted = studio.quote(account, {"prompt": "a fox", **shape}).estimated_run_s
    record = finished(studio.queue, studio.submit(account, {"prompt": "a fox", **shape}).job_id)
    return quoted, record


def quote_accuracy(studio: Studio) -> dict[str, Any]:
    for _ in range(CALIBRATION_ROUNDS):
        for shape in GRID:
            run_alone(studio, "calibrate", shape)
    errors = []
    for shape in GRID * MEASURED_PER_SHAPE:
        quoted, record = run_alone(studio, "measure", shape)
        errors.append(abs(record.run_s - quoted) / record.run_s)
    return {
        "shapes": len(GRID),
        "jobs_measured": len(errors),
        "median_abs_error": round(statistics.median(errors), 3),
        "p90_abs_error": round(statistics.quantiles(errors, n=10)[-1], 3),
    }


def wait_estimates(studio: Studio) -> dict[str, Any]:
    rng = random.Random(1)
    jobs = [studio.submit(f"wait-{n % 3}", {"prompt": "a fox", **rng.choice(GRID)}).job_id for n in range(9)]
    estimated_at = time.time()
    estimates = {job_id: studio.status(f"wait-{n % 3}", job_id).eta_start_s for n, job_id in enumerate(jobs)}
    records = {job_id: finished(studio.queue, job_id) for job_id in jobs}
    errors = [
        abs((records[job_id].started_at or 0.0) - estimated_at - estimate)
        for job_id, estimate in estimates.items()
        if estimate is not None and estimate > 0
    ]
    real = [(records[job_id].started_at or 0.0) - estimated_at for job_id in estimates]
    return {
        "jobs": len(jobs),
        "median_abs_error_s": round(statistics.median(errors), 2),
        "max_abs_error_s": round(max(errors), 2),
        "longest_real_wait_s": round(max(real), 2),
    }


def fair_shares(studio: Studio) -> dict[str, Any]:
    heavy = {"num_frames": 31, "height": 128, "width": 128, "num_inference_steps": 8}
    light = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}
    rng = random.Random(2)
    plan = {
        "share-heavy": [heavy] * 14,
        "share-light": [light] * 50,
        "share-mixed": [rng.choice(GRID) for _ in range(30)],
    }
    submitted = {
        account: [studio.submit(account, {"prompt": "a fox", **shape}).job_id for shape in shapes]
        for account, shapes in plan.items()
    }
    started = time.time()
    records = {account: [finished(studio.queue, job_id) for job_id in jobs] for account, jobs in submitted.items()}
    # Backlogged until the first account's last job starts: from then on it has nothing waiting.
    until = min(max(record.started_at or 0.0 for record in jobs) for jobs in records.values())
    used = {
        account: sum(
            max(0.0, min(record.finished_at or 0.0, until) - max(record.started_at or 0.0, started)) for record in jobs
        )
        for account, jobs in records.items()
    }
    total = sum(used.values())
    return {
        "backlogged_s": round(until - started, 1),
        "shares": {account: round(seconds / total, 3) for account, seconds in used.items()},
        "jobs": {account: len(jobs) for account, jobs in plan.items()},
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_settings(Path(tmp)) as base:
        settings = replace(base, **{**GENEROUS, "max_pending_jobs": 1000}, guest_daily_gpu_seconds=0)
        worker = start_worker(settings, Path(tmp) / "worker.log")
        try:
            with Redis.from_url(settings.redis_url or "") as redis:
                studio = Studio(redis, settings)
                results = {
                    "quote_accuracy": quote_accuracy(studio),
                    "wait_estimate": wait_estimates(studio),
                    "fair_share": fair_shares(studio),
                }
        finally:
            worker.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
