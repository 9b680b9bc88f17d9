"""How fast the worker renders Mochi: the reference recipe against the worker's fast path, on one set of weights.

Builds the full-size architecture (diffusers' default MochiTransformer3DModel and AutoencoderKLMochi
configs, a T5-XXL-sized encoder) with random weights directly on the GPU in bf16, no download:
speed does not depend on weight values. Each variant renders the same prompt and seed through the
worker's own `MochiRenderer`, one after another on the same pipeline:
  a_reference        bf16, enable_model_cpu_offload(), VAE tiling (diffusers' documented recipe)
  b_resident         everything on the GPU, no offload
  c_compiled         b + torch.compile of each transformer block (warmed first, compile time apart)
  d_batched          c + batched attention (no per-batch loop, no torch.nonzero host sync)
  e_step_cache       d + FirstBlockCache (only with --step-cache: it changes the output)
Each variant warms up as the worker does, renders once untimed-as-steady (`first_render_s`: late
compiles show there), then `--runs` times. PSNR is against a_reference's frames (kept in --save-dir,
so variants can run in separate calls: one full-size variant takes minutes).

Prints JSON. Usage: python -m benchmarks.gpu_mochi [--frames 85 163] [--steps 64] [--variants a_reference d_batched]
       python -m benchmarks.gpu_mochi --tiny     (the tiny model on the CPU: keeps the script from rotting)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mochi_app.fast_path import FastPath, apply_fast_path, remove_fast_path
from mochi_app.renderer import MochiRenderer, OutOfMemory
from mochi_app.schemas import GenerationRequest
from mochi_app.video import write_mp4

PROMPT = "a red fox runs through fresh snow at dawn, slow motion, cinematic"
# The physical floor the issue quotes: 64 steps at 85 frames, bf16, on an H100 (an H200 has the same compute).
FLOOR_S = {"H100": 70.0, "H200": 70.0}
GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Variant:
    offload: bool
    fast_path: FastPath


VARIANTS = {
    "a_reference": Variant(offload=True, fast_path=FastPath()),
    "b_resident": Variant(offload=False, fast_path=FastPath()),
    "c_compiled": Variant(offload=False, fast_path=FastPath(compile_blocks=True)),
    "d_batched": Variant(offload=False, fast_path=FastPath(batched_attention=True, compile_blocks=True)),
    "e_step_cache": Variant(
        offload=False, fast_path=FastPath(batched_attention=True, compile_blocks=True, step_cache_threshold=0.05)
    ),
}


def build_full_size_pipeline() -> Any:
    """Mochi's real architecture with random bf16 weights, made on the GPU; the tokenizer is the tiny one."""
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    from mochi_app.tiny_model import build_tiny_tokenizer

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            # T5 v1.1 XXL, as in genmo/mochi-1-preview's text_encoder/config.json.
            text_encoder = T5EncoderModel(
                T5Config(
                    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                )
            )  # fmt: skip
            transformer = MochiTransformer3DModel()
            vae = AutoencoderKLMochi()
    finally:
        torch.set_default_dtype(torch.float32)
    pipe = MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=T5TokenizerFast(tokenizer_object=build_tiny_tokenizer(), extra_ids=0),
        transformer=transformer,
    )
    pipe.vae.enable_tiling()
    return pipe


def build_tiny_pipeline_on_cpu() -> Any:
    from mochi_app.tiny_model import build_tiny_pipeline

    return build_tiny_pipeline()


def for_inference(pipe: Any) -> Any:
    """Freshly built modules are in training mode (T5's dropout would make every render differ)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def configure(pipe: Any, variant: Variant, cuda: bool) -> None:
    """Put `pipe` in `variant`'s state, whatever state the previous variant left it in."""
    remove_fast_path(pipe)
    if cuda:
        pipe.remove_all_hooks()
        if variant.offload:
            pipe.enable_model_cpu_offload()
        else:
            pipe.to("cuda")
    # Model offload needs an accelerator: on a CPU the reference runs resident.
    apply_fast_path(pipe, variant.fast_path)


def synchronized(cuda: bool) -> Callable[[], float]:
    def now() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


def render_once(renderer: MochiRenderer, request: GenerationRequest, cuda: bool, video: Path) -> dict[str, Any]:
    """One render with per-step times, decode and MP4 encode; returns the figures and the frames."""
    now = synchronized(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_ends: list[float] = []
    started = now()
    rendering = renderer.render(request, on_step=lambda step, total: step_ends.append(now()))
    rendered = now()
    write_mp4(rendering.frames, video, request.fps)
    encoded = now()
    steps = np.diff([started, *step_ends]).tolist()
    return {
        "first_step_s": steps[0],  # text encoding and latent set-up included
        "step_median_s": statistics.median(steps[1:] or steps),
        "denoise_s": rendering.denoise_s,
        "decode_s": rendering.decode_s,
        "mp4_s": encoded - rendered,
        "total_s": encoded - started,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
        "frames": rendering.frames,
    }


def text_encode_s(pipe: Any, cuda: bool) -> float:
    now = synchronized(cuda)
    started = now()
    with torch.inference_mode():
        pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True, device=pipe._execution_device)
    return now() - started


def psnr_db(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def measure(
    pipe: Any, name: str, request: GenerationRequest, *, runs: int, save_dir: Path, cuda: bool
) -> dict[str, Any]:
    variant = VARIANTS[name]
    configure(pipe, variant, cuda)
    renderer = MochiRenderer(pipe, name, variant.fast_path)
    figures: dict[str, Any] = {"warm_up_s": renderer.warm_up(), "text_encode_s": text_encode_s(pipe, cuda)}
    try:
        # The first render at this size and prompt is kept apart: whatever compiles late shows there.
        first, *rendered = [render_once(renderer, request, cuda, save_dir / f"{name}.mp4") for _ in range(runs + 1)]
    except OutOfMemory as exc:
        return {**figures, "error": str(exc)}
    figures["first_render_s"] = first["total_s"]
    figures |= {
        key: statistics.median(r[key] for r in rendered) for key in rendered[0] if key not in {"frames", "peak_gpu_gib"}
    }
    figures["peak_gpu_gib"] = rendered[0]["peak_gpu_gib"]
    frames = rendered[-1]["frames"]
    np.save(save_dir / f"{name}-{request.num_frames}.npy", frames)
    reference = save_dir / f"a_reference-{request.num_frames}.npy"
    figures["psnr_vs_a_db"] = psnr_db(frames, np.load(reference)) if reference.exists() else None
    figures["frames_std"] = float(frames.std())  # random weights: a flat output would make PSNR meaningless
    return figures


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU at a small size")
    parser.add_argument("--frames", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--step-cache", action="store_true", help="also run e_step_cache (changes the output)")
    parser.add_argument("--save-dir", type=Path, default=None, help="frames kept here for PSNR across calls")
    args = parser.parse_args()

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        parser.error("no CUDA GPU here: run with --tiny for the CPU check")
    size = (
        {"height": 64, "width": 96, "num_inference_steps": 3}
        if args.tiny
        else {"height": 480, "width": 848, "num_inference_steps": 64}
    )
    if args.steps:
        size["num_inference_steps"] = args.steps
    frame_counts = args.frames or ([7] if args.tiny else [85])
    names = args.variants or [name for name in VARIANTS if args.step_cache or name != "e_step_cache"]
    pipe = for_inference(build_tiny_pipeline_on_cpu() if args.tiny else build_full_size_pipeline())
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    floor_s = next((s for gpu, s in FLOOR_S.items() if gpu in device_name), None)

    with tempfile.TemporaryDirectory() as scratch:
        save_dir = args.save_dir or Path(scratch)
        save_dir.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {}
        for num_frames in frame_counts:
            request = GenerationRequest(prompt=PROMPT, num_frames=num_frames, seed=0, **size)
            by_variant = {
                name: measure(pipe, name, request, runs=args.runs, save_dir=save_dir, cuda=cuda) for name in names
            }
            reference_s = by_variant.get("a_reference", {}).get("total_s")
            for figures in by_variant.values():
                if reference_s and "total_s" in figures:
                    figures["speedup_vs_a"] = reference_s / figures["total_s"]
                if floor_s and "denoise_s" in figures and num_frames == 85:
                    figures["denoise_vs_floor"] = figures["denoise_s"] / floor_s
            results[f"{num_frames}_frames"] = by_variant
    print(
        json.dumps(
            rounded({"device": device_name, "runs": args.runs, "size": size, "floor_s": floor_s, **results}), indent=2
        )
    )


if __name__ == "__main__":
    main()
