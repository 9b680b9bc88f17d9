"""The benchmark scripts run at their smallest size, so they cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


def run_benchmark(module: str, *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", f"benchmarks.{module}", "--runs", "1", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    assert figures["runs"] == 1
    return figures


def test_job_overhead_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("job_overhead")
    assert figures["direct_median_s"] > 0 and figures["queued_median_s"] > 0
    assert figures["torch_threads"]["direct"] == figures["torch_threads"]["worker"]
    assert len(figures["differences_s"]) == 1 and isinstance(figures["target_met"], bool)
    phases = {"queue_wait_s", "denoise_s", "decode_s", "encode_s", "rest_s", "total_s", "cpu_s", "cpu_wait_s"}
    assert set(figures["queued_median"]) == set(figures["difference_median"]) == phases
    assert figures["quiet_half"]["pairs"] == 1


def test_web_startup_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("web_startup")
    assert figures["ready_median_s"] > 0 and figures["rss_median_mb"] > 0
    assert figures["torch_loaded"] is False


def test_submit_latency_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("submit_latency")
    assert all(figures[f"depth_{depth}"]["p50_ms"] > 0 for depth in (0, 100, 1000))


def test_durability_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("durability")
    assert set(figures["variants"]) == {"always", "everysec_waitaof", "everysec"}
    assert all(variant["p50_ms"] > 0 for variant in figures["variants"].values())


def test_gallery_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("gallery", "--jobs", "200")
    assert figures["studio_100_jobs"]["p50_ms"] > 0 and figures["studio_200_jobs"]["p50_ms"] > 0
    assert figures["rest_200_jobs"]["p50_ms"] > 0 and figures["page_size"] == 20


def test_scale_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("scale", "--jobs", "2")
    assert figures["one_worker_jobs_per_min"] > 0 and figures["two_workers_jobs_per_min"] > 0
    assert figures["ratio"] > 0


def test_polling_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("polling", "--clients", "5", "--duration-s", "2")
    for phase in ("rest", "gradio", "gradio_session"):
        (run,) = figures[phase]["per_run"]
        assert run["requests"] > 0 and run["p99_ms"] > 0
        assert run["errors"] == 0, run["errors_by_kind"]


def test_gpu_mochi_benchmark_runs_every_variant_on_the_tiny_model_and_the_fast_path_stays_lossless() -> None:
    figures = run_benchmark("gpu_mochi", "--tiny", "--step-cache")
    variants = figures["7_frames"]
    assert set(variants) == {"a_reference", "b_resident", "c_compiled", "d_batched", "e_step_cache"}
    assert all(variant["total_s"] > 0 and variant["step_median_s"] > 0 for variant in variants.values())
    assert all(variants[name]["psnr_vs_a_db"] >= 35 for name in ("b_resident", "c_compiled", "d_batched"))
    assert figures["device"] == "cpu" and figures["floor_s"] is None


def test_cpu_allocator_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("cpu_allocator", "--renders", "1")
    assert figures["kept"]["faults_median"] < figures["glibc_as_it_ships"]["faults_median"]
    assert figures["render_ratio_shipped_over_kept"] > 0


def test_storage_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("storage", "--mb", "1", "--jobs", "50")
    assert set(figures["upload"]["1_mb"]) == {"nanio", "localbucket"}
    assert all(server["median_s"] > 0 for server in figures["upload"]["1_mb"].values())
    assert figures["snapshot"]["jobs"] == 50 and figures["snapshot"]["encoded_bytes"] > 0
