"""How fast the worker renders Mochi: the reference recipe against the worker's fast path, on one set of weights.

Builds the full-size architecture (diffusers' default MochiTransformer3DModel and AutoencoderKLMochi
configs, a T5-XXL-sized encoder) with random weights directly on the GPU in bf16, no download:
speed does not depend on weight values. Each variant renders the same prompt and seed through the
worker's own `MochiRenderer`, one after another on the same pipeline:
  a_reference        bf16, enable_model_cpu_offload(), VAE tiling, diffusers' attention (the documented recipe)
  b_resident         everything on the GPU, no offload
  c_compiled         b + torch.compile of each transformer block (warmed first, compile time apart)
  d_masked           c + masked attention (one masked SDPA for the batch, no torch.nonzero host sync)
  d_prefix           c + prefix attention (each prompt's real tokens only, no mask): the worker's default
  e_step_cache       d_prefix + FirstBlockCache (only with --step-cache: it changes the output)
Each variant warms up as the worker does, records the fast path the pipeline really runs afterwards,
renders once (`first_render`: late compiles show there), then `--runs` more times (0: the first render only).
PSNR is against a_reference's frames, kept in memory, so it needs a_reference in the same call. One JSON
object is printed per line as soon as it is known (a run cut short keeps what it measured): the
device first, then the floor per frame count, then each variant.

Usage: python -m benchmarks.gpu_mochi [--frames 85 163] [--steps 64] [--runs 1] [--variants a_reference d_prefix]
       python -m benchmarks.gpu_mochi --tiny     (the tiny model on the CPU: keeps the script from rotting)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mochi_app.fast_path import FastPath, apply_fast_path, installed_fast_path, remove_fast_path
from mochi_app.renderer import MochiRenderer, OutOfMemory
from mochi_app.schemas import GenerationRequest
from mochi_app.work import TEXT_TOKENS, video_tokens

PROMPT = "a red fox runs through fresh snow at dawn, slow motion, cinematic"
GIB = 1024**3
TERA = 1e12
# Dense bf16 on the datasheets: the H200 has the H100 SXM's compute (and more, faster memory).
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0}
# Mochi 1's transformer as diffusers builds it by default: 48 blocks; the video stream is 3072 wide (q, k, v
# and out projections, a SwiGLU of 8192), the prompt stream 1536 wide into the joint 24 x 128 attention (a
# SwiGLU of 4096). Matmul FLOPs are 2 per weight per token; attention's two products 4 x width per pair.
BLOCKS = 48
ATTENTION_WIDTH = 24 * 128
VIDEO_FLOPS_PER_TOKEN = 2 * (4 * 3072 * ATTENTION_WIDTH + 3072 * 2 * 8192 + 8192 * 3072)  # 226.5 M
TEXT_FLOPS_PER_TOKEN = 2 * (4 * 1536 * ATTENTION_WIDTH + 1536 * 2 * 4096 + 4096 * 1536)  # 75.5 M


@dataclass(frozen=True, slots=True)
class Variant:
    offload: bool
    fast_path: FastPath


DIFFUSERS = FastPath(attention="diffusers")
VARIANTS = {
    "a_reference": Variant(offload=True, fast_path=DIFFUSERS),
    "b_resident": Variant(offload=False, fast_path=DIFFUSERS),
    "c_compiled": Variant(offload=False, fast_path=FastPath(attention="diffusers", compile_blocks=True)),
    "d_masked": Variant(offload=False, fast_path=FastPath(attention="masked", compile_blocks=True)),
    "d_prefix": Variant(offload=False, fast_path=FastPath(attention="prefix", compile_blocks=True)),
    "e_step_cache": Variant(
        offload=False, fast_path=FastPath(attention="prefix", compile_blocks=True, step_cache_threshold=0.05)
    ),
}


def transformer_pass_flops(num_frames: int, height: int, width: int, text_tokens: int = TEXT_TOKENS) -> float:
    """One sample's pass through the 48 blocks, from the latent frame count (within 0.1% of torch's
    FlopCounterMode: the last block's missing prompt output, embeddings and norms are left out)."""
    video = video_tokens(num_frames, height, width)
    per_block = VIDEO_FLOPS_PER_TOKEN * video + TEXT_FLOPS_PER_TOKEN * text_tokens
    return BLOCKS * (per_block + 2 * 2 * ATTENTION_WIDTH * (video + text_tokens) ** 2)


def denoise_flops(request: GenerationRequest) -> float:
    """The denoising loop's FLOPs: every step, one pass per sample (two under guidance)."""
    passes = 2 if request.guidance_scale > 1 else 1
    pass_flops = transformer_pass_flops(request.rendered_num_frames, request.height, request.width)
    return request.num_inference_steps * passes * pass_flops


def floor(request: GenerationRequest, device_name: str, matmul_tflops: float | None) -> dict[str, Any]:
    """The denoising time no implementation can beat: its FLOPs at the datasheet's and at the measured
    matmul peak."""
    flops = denoise_flops(request)
    datasheet = next((tflops for gpu, tflops in DATASHEET_TFLOPS.items() if gpu in device_name), None)
    return {
        "latent_frames": (request.rendered_num_frames - 1) // 6 + 1,
        "video_tokens": video_tokens(request.rendered_num_frames, request.height, request.width),
        "steps": request.num_inference_steps,
        "pflop": flops / 1e15,
        "datasheet_tflops": datasheet,
        "at_datasheet_s": flops / (datasheet * TERA) if datasheet else None,
        "matmul_tflops": matmul_tflops,
        "at_measured_matmul_s": flops / (matmul_tflops * TERA) if matmul_tflops else None,
    }


def matmul_tflops(cuda: bool, size: int = 8192, repeats: int = 10) -> float | None:
    """The bf16 matmul rate this GPU reaches (random data, after warm-ups): the floor's practical peak."""
    if not cuda:
        return None
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / TERA


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


def render_once(renderer: MochiRenderer, request: GenerationRequest, cuda: bool, video: Path | None) -> dict[str, Any]:
    """One render with per-step times, decode and (given a path) MP4 encode; the figures and the frames."""
    now = synchronized(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_ends: list[float] = []
    started = now()
    rendering = renderer.render(request, on_step=lambda step, total: step_ends.append(now()))
    rendered = now()
    if video is not None:
        from mochi_app.video import write_mp4  # needs ffmpeg: gpu_check renders without it

        write_mp4(rendering.frames, video, request.fps)
    encoded = now()
    steps = np.diff([started, *step_ends]).tolist()
    return {
        "first_step_s": steps[0],  # text encoding and latent set-up included
        "step_median_s": statistics.median(steps[1:] or steps),
        "denoise_s": rendering.denoise_s,
        "decode_s": rendering.decode_s,
        "mp4_s": encoded - rendered if video is not None else None,
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


def relative_l2(frames: np.ndarray, reference: np.ndarray) -> float:
    difference = frames.astype(np.float64) - reference.astype(np.float64)
    return float(np.linalg.norm(difference) / max(np.linalg.norm(reference.astype(np.float64)), 1e-12))


def prepare(pipe: Any, variant: Variant, cuda: bool) -> tuple[MochiRenderer, dict[str, Any]]:
    """Put `pipe` in `variant`'s state and warm it up as the worker does; the renderer and its first figures."""
    configure(pipe, variant, cuda)
    renderer = MochiRenderer(pipe, "benchmark", variant.fast_path)
    figures: dict[str, Any] = {"warm_up_s": renderer.warm_up(), "text_encode_s": text_encode_s(pipe, cuda)}
    # What runs, not what was asked: a compiler that failed at warm-up leaves the blocks eager.
    figures["fast_path_asked"] = asdict(variant.fast_path)
    figures["fast_path_after_warm_up"] = asdict(installed_fast_path(pipe))
    return renderer, figures


def rendered(
    renderer: MochiRenderer, request: GenerationRequest, *, runs: int, cuda: bool, video: Path | None
) -> dict[str, Any]:
    """Render 1 + `runs` times; the figures (the first render apart, unless it is all there is) and last frames."""
    try:
        first = render_once(renderer, request, cuda, video)
        steady = [render_once(renderer, request, cuda, video) for _ in range(runs)]
    except OutOfMemory as exc:
        return {"error": str(exc)}
    figures: dict[str, Any] = {
        "first_render": {key: first[key] for key in ("total_s", "first_step_s", "step_median_s")},
        "steady_runs": len(steady),
    }
    counted = steady or [first]
    figures |= {
        key: statistics.median(r[key] for r in counted)
        for key in counted[0]
        if key not in {"frames", "peak_gpu_gib", "mp4_s"}
    }
    figures["mp4_s"] = counted[0]["mp4_s"]
    figures["peak_gpu_gib"] = max((r["peak_gpu_gib"] or 0.0) for r in [first, *steady]) if cuda else None
    figures["frames"] = counted[-1]["frames"]
    return figures


def measure(
    pipe: Any, variant: Variant, request: GenerationRequest, *, runs: int, cuda: bool, video: Path | None
) -> dict[str, Any]:
    """`prepare`, then `rendered`: one variant's figures and its last frames."""
    renderer, figures = prepare(pipe, variant, cuda)
    return figures | rendered(renderer, request, runs=runs, cuda=cuda, video=video)


def compared(figures: dict[str, Any], reference: dict[str, Any] | None, floor_s: float | None) -> dict[str, Any]:
    """A variant's figures for printing: its frames replaced by how far they are from the reference's."""
    frames = figures.pop("frames", None)
    if frames is not None:
        figures["frames_std"] = float(frames.std())  # random weights: a flat output would make PSNR meaningless
        if reference is not None and "frames" in reference:
            figures["psnr_vs_a_db"] = psnr_db(frames, reference["frames"])
            figures["relative_l2_vs_a"] = relative_l2(frames, reference["frames"])
            figures["speedup_vs_a"] = reference["total_s"] / figures["total_s"]
        if floor_s:
            figures["denoise_vs_floor"] = figures["denoise_s"] / floor_s
    return figures


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.5g}")  # significant figures: a relative L2 of 1e-7 must not print as 0
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return value


def emit(line: dict[str, Any]) -> None:
    """One JSON object per line, flushed: what a run cut short has measured is already out."""
    print(json.dumps(rounded(line)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="steady renders after the first (0: the first only)")
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU at a small size")
    parser.add_argument("--frames", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--step-cache", action="store_true", help="also run e_step_cache (changes the output)")
    args = parser.parse_args()
    if args.runs < 0:
        parser.error(f"--runs must be at least 0, got {args.runs}")

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
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    emit(
        {
            "device": device_name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "runs": args.runs,
            "size": size,
            "variants": names,
        }
    )
    peak_tflops = matmul_tflops(cuda)
    pipe = for_inference(build_tiny_pipeline_on_cpu() if args.tiny else build_full_size_pipeline())

    with tempfile.TemporaryDirectory() as scratch:
        for num_frames in frame_counts:
            request = GenerationRequest(prompt=PROMPT, num_frames=num_frames, seed=0, **size)
            floor_figures = floor(request, device_name, peak_tflops)
            emit({"frames": num_frames, "floor": floor_figures})
            floor_s = floor_figures["at_datasheet_s"]
            reference: dict[str, Any] | None = None
            for name in names:
                video = Path(scratch) / f"{name}.mp4"
                figures = measure(pipe, VARIANTS[name], request, runs=args.runs, cuda=cuda, video=video)
                if name == "a_reference":
                    reference = {"frames": figures.get("frames"), "total_s": figures.get("total_s")}
                    if reference["frames"] is None:
                        reference = None
                emit({"frames": num_frames, "variant": name, **compared(figures, reference, floor_s)})


if __name__ == "__main__":
    main()
