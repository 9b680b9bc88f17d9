"""The web process on its own: seconds to answer, resident memory, and no torch loaded.

Prints JSON. Usage: python -m benchmarks.web_startup [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._common import embedded_settings
from mochi_app.config import Settings
from tests.harness import start_web

HEAVY_LIBRARIES = ("libtorch", "/torch/", "/diffusers/", "/transformers/")


def one_start(settings: Settings, log_path: Path) -> dict[str, float | bool]:
    """Spawn `python -m mochi_app serve`, wait for /healthz, load the page, then read /proc."""
    started = time.perf_counter()
    child, url = start_web(settings, log_path)
    try:
        ready_s = time.perf_counter() - started
        assert httpx.get(url, timeout=10).status_code == 200
        for _ in range(20):
            httpx.get(f"{url}/healthz", timeout=10)
        pid = child.process.pid
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        maps = Path(f"/proc/{pid}/maps").read_text()
        return {
            "ready_s": round(ready_s, 3),
            "rss_mb": round(rss_kib / 1024, 1),
            "torch_loaded": any(name in maps for name in HEAVY_LIBRARIES),
        }
    finally:
        child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_settings(Path(tmp)) as settings:
        starts = [one_start(settings, Path(tmp) / f"web-{run}.log") for run in range(args.runs)]
    print(
        json.dumps(
            {
                "runs": args.runs,
                "ready_median_s": statistics.median(float(s["ready_s"]) for s in starts),
                "rss_median_mb": statistics.median(float(s["rss_mb"]) for s in starts),
                "torch_loaded": any(s["torch_loaded"] for s in starts),
                "starts": starts,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
