"""The one prepared device check for issue 16: within 8 minutes on one H200, one JSON object per line, in order.

1. versions: Python, torch, CUDA, cuDNN, diffusers, transformers, the GPU and its memory, the bf16 matmul rate;
2. attention at the real shape (batch 2, 24 heads of 128, 23,850 video tokens + 256 prompt slots, real
   lengths 20 and 1): diffusers' loop, the masked batch, prefix views, varlen; ms, TFLOP/s of the real
   work, the largest difference from diffusers' loop, and the kernels the profiler saw;
3. the full-size architecture with random bf16 weights (no download) at 848x480, 85 frames, 8 steps:
   a_reference (model CPU offload + VAE tiling, eager, diffusers' attention), b_resident, d_default (the
   worker's fast path: compiled blocks + --attention); per variant text encoding, first and median step,
   decode, peak memory, the 64-step time extrapolated as total + 56 x median step, and PSNR and relative
   L2 of b and d against a;
4. if the budget leaves time: peak memory at 163 frames, 2 steps, resident (d's state).
Each stage checks the budget first and prints `skipped` when too little is left. Nothing needs ffmpeg.

On the device (wheels from benchmarks/device_wheels.sh, carried as `.whl`):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check --budget-s 470
Here: python -m benchmarks.gpu_check --tiny   (small shapes and the tiny model on the CPU: keeps it from rotting)
"""

from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmarks.gpu_mochi import (
    VARIANTS,
    Variant,
    build_full_size_pipeline,
    build_tiny_pipeline_on_cpu,
    emit,
    floor,
    for_inference,
    matmul_tflops,
    prepare,
    psnr_db,
    relative_l2,
    rendered,
)
from mochi_app.fast_path import FastPath, masked_attention, prefix_attention
from mochi_app.schemas import GenerationRequest

GIB = 1024**3
TERA = 1e12
PROMPT = "a red fox runs through fresh snow at dawn, slow motion, cinematic"
FULL_STEPS = 64  # what a job renders by default: the 8-step figures are extrapolated to it


@dataclass(frozen=True, slots=True)
class Shape:
    batch: int
    heads: int
    head_dim: int
    video: int
    text_slots: int
    lengths: tuple[int, ...]


REAL_SHAPE = Shape(batch=2, heads=24, head_dim=128, video=23_850, text_slots=256, lengths=(20, 1))
TINY_SHAPE = Shape(batch=2, heads=2, head_dim=16, video=300, text_slots=16, lengths=(5, 1))
# Seconds a stage needs at least on an H200 (estimates, from the FLOPs): stages that do not fit are skipped.
NEEDS_S = {"attention": 40, "a_reference": 90, "b_resident": 80, "d_default": 170, "163_frames": 90}


def versions(cuda: bool) -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "triton"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    found |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        found |= {
            "gpu": torch.cuda.get_device_name(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "memory_gib": total / GIB,
            "free_gib": free / GIB,
        }
    return found


# --- 2. attention cores on joint (batch, video + prompt slots, heads, head_dim) tensors ---------------------


def diffusers_loop(query: Any, key: Any, value: Any, mask: Any, video: int) -> Any:
    """`MochiAttnProcessor2_0`'s core as diffusers runs it: per sample, torch.nonzero, cat, SDPA, pad."""
    from torch.nn.functional import pad, scaled_dot_product_attention

    query, key, value = (x.transpose(1, 2) for x in (query, key, value))
    outputs = []
    for index in range(query.size(0)):
        valid = torch.nonzero(mask[index], as_tuple=False).flatten()
        joint = [
            torch.cat([x[index : index + 1, :, :video], x[index : index + 1, :, video:][:, :, valid]], dim=2)
            for x in (query, key, value)
        ]
        output = scaled_dot_product_attention(*joint)
        outputs.append(pad(output, (0, 0, 0, query.size(2) - output.size(2))))
    return torch.cat(outputs).transpose(1, 2)


def varlen(query: Any, key: Any, value: Any, lengths: Any, video: int) -> tuple[Any, str]:
    """One `torch.nn.attention.varlen` call: every sample's slots as a sequence, keys cut at `seqused_k`
    where this torch has it (padded queries then come out and are zeroed), else the real tokens packed."""
    from torch.nn.attention.varlen import varlen_attn

    batch, tokens, heads, head_dim = query.shape
    used = [video + n for n in lengths.tolist()]
    if "seqused_k" in inspect.signature(varlen_attn).parameters:
        starts = torch.arange(0, (batch + 1) * tokens, tokens, device=query.device, dtype=torch.int32)
        seqused = torch.tensor(used, device=query.device, dtype=torch.int32)
        flat = [x.reshape(batch * tokens, heads, head_dim) for x in (query, key, value)]
        output = varlen_attn(*flat, starts, starts, tokens, tokens, seqused_k=seqused).view(query.shape)
        kept = torch.arange(tokens, device=query.device)[None, :] < seqused[:, None]
        return output * kept[:, :, None, None].to(output.dtype), "seqused_k"
    starts = torch.tensor([0, *torch.tensor(used).cumsum(0).tolist()], device=query.device, dtype=torch.int32)
    packed = [torch.cat([x[index, :n] for index, n in enumerate(used)]) for x in (query, key, value)]
    flat_output = varlen_attn(*packed, starts, starts, max(used), max(used))
    output = query.new_zeros(query.shape)
    for index, n in enumerate(used):
        output[index, :n] = flat_output[int(starts[index]) : int(starts[index]) + n]
    return output, "packed (no seqused_k in this torch)"


def timed_ms(run: Callable[[], Any], cuda: bool, repeats: int) -> float:
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def kernels(run: Callable[[], Any], cuda: bool, top: int = 6) -> list[dict[str, Any]]:
    """The kernels (on a CPU: the operators) one call ran, by time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as profiler:
        run()
        if cuda:
            torch.cuda.synchronize()
    by_name: dict[str, float] = {}
    for event in profiler.events():
        on_device = event.device_type == torch.autograd.DeviceType.CUDA
        if on_device == cuda:
            time_us = event.device_time if cuda else event.cpu_time
            by_name[event.name] = by_name.get(event.name, 0.0) + time_us
    ranked = sorted(by_name.items(), key=lambda item: -item[1])[:top]
    return [{"name": name[:160], "us": us} for name, us in ranked]


def check_attention(shape: Shape, cuda: bool, repeats: int) -> None:
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    generator = torch.Generator(device).manual_seed(0)
    tokens = shape.video + shape.text_slots
    query, key, value = (
        torch.randn(shape.batch, tokens, shape.heads, shape.head_dim, device=device, dtype=dtype, generator=generator)
        for _ in range(3)
    )
    lengths = torch.tensor(shape.lengths)  # on the host, as the renderer hands them over
    mask = (torch.arange(shape.text_slots)[None, :] < lengths[:, None]).to(device)
    useful = sum(4 * shape.heads * shape.head_dim * (shape.video + n) ** 2 for n in shape.lengths)
    cores: dict[str, Callable[[], Any]] = {
        "diffusers_loop": lambda: diffusers_loop(query, key, value, mask, shape.video),
        "masked": lambda: masked_attention(query, key, value, mask),
        "prefix": lambda: prefix_attention(query, key, value, lengths, shape.video),
    }
    if cuda:
        cores["varlen"] = lambda: varlen(query, key, value, lengths, shape.video)[0]
    emit({"attention_shape": asdict(shape), "useful_tflop": useful / TERA})
    with torch.inference_mode():
        reference = cores["diffusers_loop"]().float()
        for name, run in cores.items():
            line: dict[str, Any] = {"attention": name}
            try:
                if name == "varlen":
                    line["varlen_mode"] = varlen(query, key, value, lengths, shape.video)[1]
                line["max_abs_diff_vs_diffusers"] = float((run().float() - reference).abs().max())
                milliseconds = timed_ms(run, cuda, repeats)
                line |= {"ms": milliseconds, "tflops": useful / (milliseconds / 1000) / TERA}
                line["kernels"] = kernels(run, cuda)
            except Exception as exc:  # one core that cannot run here (no varlen, out of memory) is an answer too
                line["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            if cuda:
                torch.cuda.empty_cache()
            emit(line)


# --- 3 and 4. the pipeline --------------------------------------------------------------------------------


def check_pipeline(args: argparse.Namespace, cuda: bool, left_s: Callable[[], float]) -> None:
    size = {"height": 64, "width": 96} if args.tiny else {"height": 480, "width": 848}
    request = GenerationRequest(prompt=PROMPT, num_frames=args.frames, seed=0, num_inference_steps=args.steps, **size)
    emit({"floor_64_steps": floor(request.model_copy(update={"num_inference_steps": FULL_STEPS}), _gpu(cuda), None)})
    pipe = for_inference(build_tiny_pipeline_on_cpu() if args.tiny else build_full_size_pipeline())
    default = Variant(offload=False, fast_path=FastPath(attention=args.attention, compile_blocks=True))
    variants = {"a_reference": VARIANTS["a_reference"], "b_resident": VARIANTS["b_resident"], "d_default": default}
    reference: Any = None
    renderer = None
    for name, variant in variants.items():
        if not args.tiny and left_s() < NEEDS_S[name]:
            emit({"variant": name, "skipped": f"{left_s():.0f} s left, needs about {NEEDS_S[name]} s"})
            renderer = None
            continue
        renderer, figures = prepare(pipe, variant, cuda)
        figures |= rendered(renderer, request, runs=0, cuda=cuda, video=None)
        frames = figures.pop("frames", None)
        if "total_s" in figures:
            remaining_steps = FULL_STEPS - args.steps
            figures["extrapolated_64_steps_s"] = figures["total_s"] + remaining_steps * figures["step_median_s"]
        if name == "a_reference":
            reference = frames
        elif frames is not None and reference is not None:
            figures |= {"psnr_vs_a_db": psnr_db(frames, reference), "relative_l2_vs_a": relative_l2(frames, reference)}
        if frames is not None:
            figures["frames_std"] = float(frames.std())  # random weights: flat frames would make PSNR meaningless
        emit({"variant": name, "frames": request.rendered_num_frames, "steps": args.steps, **figures})
    # The longest clip on d's pipeline as it stands: resident, compiled and warm, so no compiling again.
    if renderer is None or (not args.tiny and left_s() < NEEDS_S["163_frames"]):
        emit({"variant": "d_default_163_frames", "skipped": f"{left_s():.0f} s left, or d did not run"})
        return
    longest = request.model_copy(update={"num_frames": 13 if args.tiny else 163, "num_inference_steps": 2})
    figures = rendered(renderer, longest, runs=0, cuda=cuda, video=None)
    figures.pop("frames", None)
    emit({"variant": "d_default_163_frames", "frames": longest.rendered_num_frames, "steps": 2, **figures})


def _gpu(cuda: bool) -> str:
    return torch.cuda.get_device_name() if cuda else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small shapes and the tiny model on the CPU")
    parser.add_argument("--budget-s", type=float, default=470.0, help="stages that would not fit are skipped")
    parser.add_argument("--frames", type=int, default=None, help="85 (7 with --tiny)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--attention", choices=["prefix", "masked", "diffusers"], default="prefix")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per attention core")
    parser.add_argument("--skip-pipeline", action="store_true", help="versions and attention only")
    args = parser.parse_args()
    args.frames = args.frames or (7 if args.tiny else 85)
    started = time.perf_counter()

    def left_s() -> float:
        return args.budget_s - (time.perf_counter() - started)

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        parser.error("no CUDA GPU here: run with --tiny for the CPU check")
    emit({"versions": versions(cuda), "matmul_tflops": matmul_tflops(cuda), "budget_s": args.budget_s})
    if args.tiny or left_s() >= NEEDS_S["attention"]:
        check_attention(TINY_SHAPE if args.tiny else REAL_SHAPE, cuda, args.repeats)
    if not args.skip_pipeline:
        check_pipeline(args, cuda, left_s)
    emit({"done_s": time.perf_counter() - started})


if __name__ == "__main__":
    main()
