"""What a live preview costs at full size, against a denoising step of the real model estimated from the shapes.

Prints JSON. Usage: python -m benchmarks.previews [--runs 50]
The preview: the middle latent frame sliced from bf16 latents, to float32 on the CPU, projected and encoded
(previews.preview_webp). The step: Mochi 1's 10B-parameter transformer on the video tokens (48 layers,
width 3072), twice for classifier-free guidance, at 40 % of an H200's 989 dense bf16 TFLOPS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mochi_app.previews import preview_webp

SHAPES = {"85_frames": 85, "163_frames": 163}  # at 848 x 480
PARAMETERS = 10e9
LAYERS, WIDTH, TEXT_TOKENS = 48, 3072, 256
H200_BF16_FLOPS, UTILIZATION = 989e12, 0.4


def estimated_step_s(frames: int, height: int = 480, width: int = 848) -> float:
    """Seconds of one guided step: the linear layers' 2·P·N and attention's 4·L·N²·d, for both halves of CFG."""
    tokens = ((frames - 1) // 6 + 1) * (height // 16) * (width // 16) + TEXT_TOKENS  # 8x VAE, then 2x2 patches
    forward = 2 * PARAMETERS * tokens + 4 * LAYERS * tokens**2 * WIDTH
    return 2 * forward / (H200_BF16_FLOPS * UTILIZATION)


def preview_ms(latents: torch.Tensor) -> float:
    started = time.perf_counter()
    middle = latents[0, :, latents.shape[2] // 2]
    preview_webp(middle.detach().float().cpu().numpy())
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    figures: dict[str, object] = {"runs": args.runs}
    for name, frames in SHAPES.items():
        latents = torch.randn(1, 12, (frames - 1) // 6 + 1, 60, 106, dtype=torch.bfloat16)
        median_ms = statistics.median(preview_ms(latents) for _ in range(args.runs))
        step_s = estimated_step_s(frames)
        figures[name] = {
            "preview_median_ms": round(median_ms, 2),
            "estimated_step_s": round(step_s, 2),
            "preview_share_of_a_step": round(median_ms / 1000 / step_s, 5),
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
