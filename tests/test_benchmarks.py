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
    assert all(figures[f"depth_{depth}"]["p50_ms"] > 0 for depth in (0, 1000, 10_000))


def test_sweeps_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("sweeps")
    for depth in (0, 1000):
        assert figures[f"depth_{depth}"]["sweep"]["p50_ms"] > 0 and figures[f"depth_{depth}"]["singles_over_sweep"] > 0


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


def json_lines(module: str, *args: str) -> list[dict[str, Any]]:
    """A benchmark that prints one JSON object per line as it goes."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_gpu_mochi_benchmark_runs_every_variant_on_the_tiny_model_and_the_fast_path_stays_lossless() -> None:
    header, floor, *lines = json_lines("gpu_mochi", "--tiny", "--step-cache", "--runs", "0")
    assert header["device"] == "cpu" and header["runs"] == 0
    assert floor["frames"] == 7 and floor["floor"]["latent_frames"] == 2 and floor["floor"]["at_datasheet_s"] is None
    variants = {line["variant"]: line for line in lines}
    assert list(variants) == ["a_reference", "b_resident", "c_compiled", "d_masked", "d_prefix", "e_step_cache"]
    for variant in variants.values():
        assert variant["total_s"] > 0 and variant["step_median_s"] > 0 and variant["steady_runs"] == 0
        assert variant["fast_path_after_warm_up"] == variant["fast_path_asked"]
    assert variants["d_prefix"]["fast_path_after_warm_up"] == {
        "attention": "prefix",
        "compile_blocks": True,
        "step_cache_threshold": 0.0,
    }
    for name in ("b_resident", "c_compiled", "d_masked", "d_prefix"):
        assert variants[name]["psnr_vs_a_db"] >= 35 and variants[name]["relative_l2_vs_a"] < 1e-3


def test_gpu_check_answers_every_question_in_order_on_the_cpu() -> None:
    lines = json_lines("gpu_check", "--tiny")
    assert lines[0]["versions"]["torch"] and lines[0]["budget_s"] > 0
    attention = {line["attention"]: line for line in lines if "attention" in line}
    assert list(attention) == ["diffusers_loop", "masked", "prefix"]  # varlen needs CUDA's flash kernels
    for core in attention.values():
        assert "error" not in core, core
        assert core["max_abs_diff_vs_diffusers"] <= 1e-5 and core["ms"] > 0 and core["kernels"]
    assert any(kernel["name"] == "mochi_app::prefix_attention" for kernel in attention["prefix"]["kernels"])
    variants = {line["variant"]: line for line in lines if "variant" in line}
    assert list(variants) == ["a_reference", "b_resident", "d_default", "d_default_163_frames"]
    default = variants["d_default"]
    assert default["fast_path_after_warm_up"] == {
        "attention": "prefix",
        "compile_blocks": True,
        "step_cache_threshold": 0.0,
    }
    assert default["extrapolated_64_steps_s"] == pytest.approx(
        default["total_s"] + 56 * default["step_median_s"], rel=1e-3
    )
    for name in ("b_resident", "d_default"):
        assert variants[name]["psnr_vs_a_db"] >= 35 and variants[name]["relative_l2_vs_a"] < 1e-3
    assert variants["d_default_163_frames"]["total_s"] > 0 and "done_s" in lines[-1]


def test_the_gpu_floor_counts_what_torch_counts_and_scales_with_steps_and_latent_frames() -> None:
    """The floor's FLOPs against FlopCounterMode on a full-size block (on the meta device: no memory, no time)."""
    import torch
    from diffusers import MochiTransformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.gpu_mochi import BLOCKS, denoise_flops, floor, transformer_pass_flops
    from mochi_app.fast_path import BatchedMochiAttnProcessor
    from mochi_app.schemas import GenerationRequest

    with torch.device("meta"):
        block = MochiTransformer3DModel(num_layers=2).transformer_blocks[0]
        block.attn1.processor = BatchedMochiAttnProcessor()  # diffusers' own needs torch.nonzero, which meta lacks
        video = 15 * 30 * 53  # 85 frames at 848x480: 15 latent frames of 30 x 53 patches
        inputs = (torch.randn(1, video, 3072), torch.randn(1, 256, 1536), torch.randn(1, 3072))
        mask, rotary = torch.ones(1, 256, dtype=torch.bool), (torch.randn(video, 24, 64), torch.randn(video, 24, 64))
        with FlopCounterMode(display=False) as counted:
            block(*inputs, mask, rotary)
    assert transformer_pass_flops(85, 480, 848) == pytest.approx(BLOCKS * counted.get_total_flops(), rel=1e-3)

    request = GenerationRequest(prompt="a fox", num_frames=85, height=480, width=848, num_inference_steps=64)
    assert denoise_flops(request) / 1e15 == pytest.approx(77.2, abs=0.1)  # 64 steps x 2 passes x 48 x 12.56 T
    figures = floor(request, "NVIDIA H200", matmul_tflops=788.0)
    assert (figures["latent_frames"], figures["video_tokens"]) == (15, 23_850)
    assert figures["at_datasheet_s"] == pytest.approx(78.0, abs=0.1)
    assert figures["at_measured_matmul_s"] == pytest.approx(98.0, abs=0.1)
    # Linear in steps; 84 frames snap to 85 (the same 15 latent frames), 163 frames to 28 of them.
    eight = GenerationRequest(prompt="a fox", num_frames=84, height=480, width=848, num_inference_steps=8)
    assert denoise_flops(eight) == pytest.approx(denoise_flops(request) / 8)
    longest = GenerationRequest(prompt="a fox", num_frames=163, height=480, width=848, num_inference_steps=64)
    assert floor(longest, "NVIDIA H100 80GB HBM3", None)["latent_frames"] == 28
    assert denoise_flops(longest) / 1e15 == pytest.approx(213.4, abs=0.1)


def test_cpu_allocator_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("cpu_allocator", "--renders", "1")
    assert figures["kept"]["faults_median"] < figures["glibc_as_it_ships"]["faults_median"]
    assert figures["render_ratio_shipped_over_kept"] > 0


def test_storage_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("storage", "--mb", "1", "--jobs", "50")
    assert set(figures["upload"]["1_mb"]) == {"nanio", "localbucket"}
    assert all(server["median_s"] > 0 for server in figures["upload"]["1_mb"].values())
    assert figures["snapshot"]["jobs"] == 50 and figures["snapshot"]["encoded_bytes"] > 0


def test_checkpoints_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("checkpoints", "--steps", "2")
    assert figures["folder"]["checkpoint_bytes"] > 0 and figures["nanio"]["checkpoint_median_ms"] > 0
    assert figures["full_size_latents_bytes"] == {"85_frames": 2_289_600, "163_frames": 4_273_920}


def test_gallery_weight_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("gallery_weight", "--frames", "7", "--height", "64", "--width", "64", "--steps", "2")
    assert figures["posters_bytes"] > 0 and figures["players_metadata_bytes"] > 0
    assert figures["whole_page_now_bytes"] > figures["posters_bytes"]


def test_previews_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("previews")
    assert figures["85_frames"]["preview_median_ms"] > 0
    assert figures["163_frames"]["estimated_step_s"] > figures["85_frames"]["estimated_step_s"]  # attention's N²
