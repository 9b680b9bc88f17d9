"""CPU renders with glibc as it ships vs. keeping freed memory (mochi_app.allocator): seconds and page faults.

Each run starts two fresh processes, in alternating order: one as a CPU worker loads the tiny model (freed
memory kept), one with glibc's own trim threshold set (MALLOC_TRIM_THRESHOLD_, so the studio steps aside).
Each renders once to warm up, then `--renders` times. Prints JSON.
Usage: python -m benchmarks.cpu_allocator [--runs 3] [--renders 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GLIBC_AS_IT_SHIPS = {"MALLOC_TRIM_THRESHOLD_": "131072"}  # glibc's default: any MALLOC_* variable wins
REQUEST = {"prompt": "a cat", "num_frames": 31, "height": 96, "width": 160, "num_inference_steps": 8, "seed": 1}

RENDERS = """
import json, resource, sys, time
from pathlib import Path
from mochi_app.config import Settings
from mochi_app.loader import load_renderer
from mochi_app.schemas import GenerationRequest

renderer = load_renderer(Settings(data_dir=Path(sys.argv[1]), model="tiny", device="cpu"))
request = GenerationRequest.model_validate(json.loads(sys.argv[3]))
renderer.render(request, lambda step, total: None)
seconds, faults = [], []
for _ in range(int(sys.argv[2])):
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    renderer.render(request, lambda step, total: None)
    seconds.append(time.perf_counter() - started)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"render_s": seconds, "faults": faults}))
"""


def renders_in_a_fresh_worker(data_dir: Path, renders: int, **env: str) -> dict[str, list[float]]:
    """Seconds and page faults of `renders` renders after a warm-up, in a new process on the CPU."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOCHI_", "MALLOC_"))} | env
    command = [sys.executable, "-c", RENDERS, str(data_dir), str(renders), json.dumps(REQUEST)]
    result = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=600, check=True)
    figures: dict[str, list[float]] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--renders", type=int, default=4)
    args = parser.parse_args()
    kept: dict[str, list[float]] = {"render_s": [], "faults": []}
    shipped: dict[str, list[float]] = {"render_s": [], "faults": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            order = [(kept, {}), (shipped, GLIBC_AS_IT_SHIPS)]
            for figures, env in order if run % 2 == 0 else reversed(order):
                for name, values in renders_in_a_fresh_worker(Path(tmp), args.renders, **env).items():
                    figures[name] += values

    def summary(figures: dict[str, list[float]]) -> dict[str, Any]:
        return {
            "render_median_s": round(statistics.median(figures["render_s"]), 3),
            "render_s": sorted(round(value, 3) for value in figures["render_s"]),
            "faults_median": int(statistics.median(figures["faults"])),
        }

    result = {
        "runs": args.runs,
        "renders_per_process": args.renders,
        "request": REQUEST,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "kept": summary(kept),
        "glibc_as_it_ships": summary(shipped),
    }
    result["render_ratio_shipped_over_kept"] = round(
        result["glibc_as_it_ships"]["render_median_s"] / result["kept"]["render_median_s"], 2
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
