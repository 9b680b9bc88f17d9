"""The real model's path on the CPU, from a tiny copy of the hub repo: load and render seconds per dtype.

Why float32 on a CPU: bf16 3D convolutions (Mochi's VAE decoder) have no fast CPU kernel.
Prints JSON. Usage: python -m benchmarks.real_path_cpu
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from diffusers import MochiPipeline

from tests.hub_snapshot import VARIANT, write_repo

CLIP = {"num_frames": 7, "height": 64, "width": 96, "num_inference_steps": 2}


def one_dtype(folder: Path, dtype: torch.dtype) -> dict[str, float]:
    started = time.perf_counter()
    pipe = MochiPipeline.from_pretrained(folder, variant=VARIANT, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    loaded = time.perf_counter()
    pipe(prompt="a red fox", generator=torch.Generator("cpu").manual_seed(0), output_type="np", **CLIP)
    return {"load_s": round(loaded - started, 2), "render_s": round(time.perf_counter() - loaded, 2)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_repo(Path(tmp) / "repo")
        fp32, bf16 = one_dtype(folder, torch.float32), one_dtype(folder, torch.bfloat16)
    ratio = round(bf16["render_s"] / fp32["render_s"], 1)
    print(json.dumps({"clip": CLIP, "threads": torch.get_num_threads(), "float32": fp32, "bfloat16": bf16,
                      "render_bf16_over_float32": ratio}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
