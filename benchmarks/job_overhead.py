"""What the service adds around the model: one job through queue and worker vs the same render in-process.

Prints JSON. Usage: python -m benchmarks.job_overhead [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from redis import Redis

from benchmarks._common import embedded_settings
from mochi_app.config import Settings
from mochi_app.generator import load_renderer
from mochi_app.queue import JobQueue
from mochi_app.schemas import GenerationRequest, JobRecord
from mochi_app.tokens import TokenCounter
from mochi_app.video import write_mp4
from tests.conftest import start_worker

PARAMS = {"prompt": "a cat walks on the beach", "num_frames": 31, "height": 96, "width": 160, "num_inference_steps": 8}


def direct_runs(settings: Settings, runs: int) -> list[float]:
    """Seconds for render + MP4 encode in this process, the model already loaded."""
    renderer = load_renderer(settings)
    renderer.warm_up()
    seconds = []
    for run in range(runs):
        request = GenerationRequest.model_validate({**PARAMS, "seed": run})
        started = time.perf_counter()
        rendering = renderer.render(request, on_step=lambda step, total: None)
        write_mp4(rendering.frames, settings.videos_dir / f"direct-{run}.mp4", request.fps)
        seconds.append(time.perf_counter() - started)
    return seconds


def queued_runs(settings: Settings, runs: int, log_path: Path) -> list[JobRecord]:
    """Records of jobs sent one at a time through Redis to an idle worker process."""
    worker = start_worker(settings, log_path)
    try:
        queue = JobQueue(Redis.from_url(settings.redis_url or ""), settings, TokenCounter.tiny())
        records = []
        for run in range(runs):
            job = queue.submit(f"bench-{uuid.uuid4().hex[:6]}", {**PARAMS, "seed": run})
            while not (record := queue.store.get(job.job_id)) or not record.status.is_terminal:
                time.sleep(0.005)
            records.append(record)
        return records
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, embedded_settings(Path(folder)) as settings:
        direct = direct_runs(settings, args.runs)
        records = queued_runs(settings, args.runs, Path(folder) / "worker.log")
    totals = [r.timings.total_s or 0.0 for r in records]
    pickups = [r.timings.queue_wait_s or 0.0 for r in records]
    direct_s, queued_s = statistics.median(direct), statistics.median(totals)
    print(
        json.dumps(
            {
                "params": PARAMS,
                "runs": args.runs,
                "direct_median_s": round(direct_s, 4),
                "queued_median_s": round(queued_s, 4),
                "overhead_s": round(queued_s - direct_s, 4),
                "overhead_ratio": round(queued_s / direct_s - 1, 4),
                "pickup_p50_ms": round(statistics.median(pickups) * 1000, 2),
                "load_s_per_job": sorted({r.timings.load_s for r in records}),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
