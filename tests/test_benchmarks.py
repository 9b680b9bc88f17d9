"""The benchmark scripts run at their smallest size, so they cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_job_overhead_benchmark_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.job_overhead", "--runs", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["runs"] == 1
    assert figures["direct_median_s"] > 0 and figures["queued_median_s"] > 0
    assert figures["load_s_per_job"] == [0.0]
