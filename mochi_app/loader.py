"""Which model, device and offload a worker uses, and loading that model (real or tiny) into a MochiRenderer."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from mochi_app.allocator import keep_freed_memory
from mochi_app.config import Device, Offload, Settings
from mochi_app.fast_path import FastPath, apply_fast_path
from mochi_app.gpus import shown_gpu
from mochi_app.renderer import TINY, MochiRenderer, log_stage
from mochi_app.stages import Stage, StageReport

log = logging.getLogger(__name__)

REAL_MODEL_ID = "genmo/mochi-1-preview"
GIB = 1024**3
# bf16 Mochi: ~20 GB transformer + ~9.5 GB T5-XXL + VAE; tiled decode and activations need the rest.
RESIDENT_MIN_FREE_BYTES = 42 * GIB
# Model offload keeps one component at a time on the GPU: the transformer plus activations.
MODEL_OFFLOAD_MIN_FREE_BYTES = 26 * GIB
# The hub repo's bf16 variant covers the transformer and the VAE; its T5 encoder has fp32 files only,
# which diffusers loads and casts. The download is about 40 GB: transformer ~20 GB, T5 ~19 GB, VAE ~1 GB.
REAL_VARIANT = "bf16"


class ModelUnavailable(RuntimeError):
    """The configured model cannot run here; the message says why and what to set instead."""


def cpu_threads(workers: int | None, cores: int | None = None) -> int:
    """Torch threads for one CPU worker when app.py runs `workers` of them on this host.

    Each torch process takes every core by default; two then fight over them and render slower
    together than one alone (measured in docs/PERFORMANCE.md), so the cores are shared out.
    """
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers or 1))


def fast_path_for(settings: Settings, cuda_available: bool) -> FastPath:
    """The speed-ups `settings` ask for; compiling pays off on a GPU, and only costs start-up time on a CPU."""
    compile_blocks = settings.compile_blocks == "on" or (settings.compile_blocks == "auto" and cuda_available)
    return FastPath(
        attention=settings.attention,
        compile_blocks=compile_blocks,
        step_cache_threshold=settings.step_cache,
    )


def resolve_model(model: str, cuda_available: bool) -> str:
    """`auto` means the real model on a CUDA machine and the tiny one elsewhere."""
    if model == "auto":
        return REAL_MODEL_ID if cuda_available else TINY
    return model


def choose_device(device: Device, cuda_available: bool) -> str:
    """`auto` means cuda when torch can use a GPU, else cpu."""
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    return device


def cuda_problem() -> str | None:
    """Why torch cannot use a GPU here, in a clause naming the versions; None when it can."""
    import warnings

    import torch

    # torch also warns with the reason ("CUDA initialization: ..."): the message below says it once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if torch.cuda.is_available():
            return None
        if torch.version.cuda is None:
            return f"torch {torch.__version__} is a CPU-only build"
        try:
            torch.cuda.init()  # type: ignore[no-untyped-call]
        except Exception as exc:  # the driver's own words: too old, missing, or no device
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) cannot use it: {reason}"
    return f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no CUDA device"


def check_gpu_usable(settings: Settings, environ: dict[str, str] | None = None) -> None:
    """Refuse to serve noise on a GPU host: with MOCHI_MODEL=auto (or MOCHI_DEVICE=cuda), a GPU that the
    driver shows but torch cannot use is an error, not a quiet fall back to the tiny model."""
    asked_for_gpu = settings.device == "cuda"
    if not asked_for_gpu and not (settings.device == "auto" and settings.model == "auto"):
        return
    problem = cuda_problem()
    if problem is None:
        return
    gpu = shown_gpu(os.environ if environ is None else environ)
    if gpu is not None:
        raise ModelUnavailable(
            f"{gpu} is visible, but {problem}: install a torch build for this driver, "
            "or set MOCHI_MODEL=tiny to try the studio without a GPU"
        )
    if asked_for_gpu:
        raise ModelUnavailable(f"MOCHI_DEVICE=cuda, but no GPU is usable: {problem}; set MOCHI_DEVICE=cpu or auto")


def choose_offload(offload: Offload, free_bytes: int) -> Offload:
    """Turn `auto` into a concrete offload mode by the GPU memory free now."""
    if offload != "auto":
        return offload
    if free_bytes >= RESIDENT_MIN_FREE_BYTES:
        return "none"
    if free_bytes >= MODEL_OFFLOAD_MIN_FREE_BYTES:
        return "model"
    return "sequential"


def load_renderer(settings: Settings, report: StageReport | None = None) -> MochiRenderer:
    """Load the model `settings.model` names on `settings.device`, announcing loudly which one it is.

    `report` hears each stage (downloading, with progress; loading; moving); ModelUnavailable says
    why the model cannot run here.
    """
    import torch

    report = report or log_stage
    use_compile_caches(settings.compile_cache_dir)
    _quiet_library_chatter()
    started_at = time.perf_counter()
    check_gpu_usable(settings)
    cuda = torch.cuda.is_available()
    device = choose_device(settings.device, cuda)
    model = resolve_model(settings.model, device == "cuda")
    if settings.model == "auto":
        log.warning(
            "MOCHI_MODEL=auto: %s",
            "CUDA found, loading the real Mochi model"
            if model != TINY
            else "no CUDA GPU, loading the TINY random-weight model: its videos are noise",
        )
    if device == "cpu":
        keep_freed_memory()
        torch.set_num_threads(cpu_threads(settings.workers))
        log.info("CPU rendering with %d torch thread(s)", torch.get_num_threads())
    if model == TINY:
        report(Stage.LOADING, "building the tiny random-weight model")
        pipe = _load_tiny(settings.models_dir, device)
    else:
        pipe = _load_real(model, settings.offload, device, report)
    fast_path = fast_path_for(settings, device == "cuda")
    apply_fast_path(pipe, fast_path)
    load_s = time.perf_counter() - started_at
    log.info("model %s loaded in %.1f s on %s (%s)", model, load_s, device, pipe.transformer.dtype)
    return MochiRenderer(pipe, model, fast_path)


def use_compile_caches(folder: Path) -> None:
    """torch.compile's caches (Inductor's and Triton's) in the data folder, so that a restarted container
    does not compile again; an operator's own locations win. Both are read when compiling, not at import."""
    for variable, name in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")):
        os.environ.setdefault(variable, str(folder / name))


def _quiet_library_chatter() -> None:
    """Our own log says what loads and how far a job is; the libraries' bars would only interleave."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    # Mochi's RoPE asks CPU autocast for float32, which CPU autocast does not do; harmless.
    warnings.filterwarnings("ignore", message="In CPU autocast")


def _load_tiny(models_dir: Path, device: str) -> Any:
    from diffusers import MochiPipeline

    from mochi_app.tiny_model import ensure_tiny_model

    log.warning("the tiny model has random weights: every video it renders is noise")
    return MochiPipeline.from_pretrained(ensure_tiny_model(models_dir)).to(device)


def real_dtype(device: str) -> Any:
    """bf16, as the weights ship, on CUDA; float32 on a CPU, whose bf16 3D convolutions (the VAE's) are
    about 70 times slower (docs/PERFORMANCE.md)."""
    import torch

    return torch.bfloat16 if device == "cuda" else torch.float32


def _load_real(source: str, offload: Offload, device: str, report: StageReport) -> Any:
    """The very path a GPU takes: fetch, `from_pretrained` with the variant, VAE tiling, then placement."""
    import torch
    from diffusers import MochiPipeline

    from mochi_app.download import model_folder

    local = Path(source).expanduser()
    variant = REAL_VARIANT if source == REAL_MODEL_ID or _has_variant(local, REAL_VARIANT) else None
    if not local.is_dir():
        report(Stage.DOWNLOADING, f"fetching {source}")
    folder = model_folder(source, variant, lambda progress: report(Stage.DOWNLOADING, f"fetching {source}", progress))
    dtype = real_dtype(device)
    report(Stage.LOADING, f"reading the weights of {source} ({str(dtype).removeprefix('torch.')})")
    pipe = MochiPipeline.from_pretrained(folder, variant=variant, torch_dtype=dtype)
    # Decoding 163 frames at 848x480 in one piece needs far more memory than the model itself.
    pipe.vae.enable_tiling()
    mode = choose_offload(offload, torch.cuda.mem_get_info()[0]) if device == "cuda" else "none"
    report(Stage.MOVING, f"to {device} (offload: {mode})")
    log.info("offload: %s (MOCHI_OFFLOAD=%s)", mode, offload)
    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload()
    else:
        pipe.enable_sequential_cpu_offload()
    return pipe


def _has_variant(folder: Path, variant: str) -> bool:
    """Whether a local copy of a hub repo holds weights in `variant` (as genmo/mochi-1-preview's do)."""
    return folder.is_dir() and any(folder.glob(f"*/*.{variant}*.safetensors"))
