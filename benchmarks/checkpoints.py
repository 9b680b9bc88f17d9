"""Resumable renders' cost: a tiny-model render with and without a checkpoint after every step, the time and
bytes of each checkpoint into the data folder and into two real S3 servers, and the full-size latents' bytes.

Prints JSON. Usage: python -m benchmarks.checkpoints [--runs 3] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import PARAMS, completed_record
from mochi_app.checkpoints import Checkpoint, fingerprint, to_bytes
from mochi_app.config import BucketURL, Settings
from mochi_app.loader import load_renderer
from mochi_app.renderer import Checkpointing, MochiRenderer
from mochi_app.schemas import FRAMES_PER_LATENT, GenerationRequest
from mochi_app.storage import BucketStorage, FolderStorage, VideoStorage
from tests.s3_servers import KINDS, start_s3_server

LATENT_CHANNELS = 12
VAE_SPATIAL = 8
BF16_BYTES = 2  # the real model's latents are in its bf16 dtype


def full_size_bytes(num_frames: int, height: int = 480, width: int = 848) -> int:
    latent_frames = (num_frames - 1) // FRAMES_PER_LATENT + 1
    return LATENT_CHANNELS * latent_frames * (height // VAE_SPATIAL) * (width // VAE_SPATIAL) * BF16_BYTES


def timed_render(renderer: MochiRenderer, request: GenerationRequest, storage: VideoStorage | None) -> dict[str, Any]:
    """One render; with `storage`, a checkpoint after every step, each save timed."""
    record = completed_record("bench", request, time.time())
    valid_for = fingerprint(request, renderer.model_name)
    saves: list[float] = []
    sizes: list[int] = []

    def save(checkpoint: Checkpoint) -> None:
        started = time.perf_counter()
        data = to_bytes(checkpoint, valid_for)
        assert storage is not None
        storage.save_checkpoint(record, data)
        saves.append(time.perf_counter() - started)
        sizes.append(len(data))

    checkpointing = Checkpointing(every_steps=1 if storage else 0, save=save)
    started = time.perf_counter()
    rendering = renderer.render(request, lambda step, total: None, checkpointing)
    return {"total_s": time.perf_counter() - started, "denoise_s": rendering.denoise_s, "saves": saves, "sizes": sizes}


def measure(runs: int, steps: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="checkpoint-bench-"))
    renderer = load_renderer(Settings(data_dir=root, model="tiny"))
    request = GenerationRequest.model_validate({**PARAMS, "num_inference_steps": steps, "seed": 1})
    servers = [start_s3_server(kind, root / kind, bucket="bench") for kind in KINDS]
    try:
        stores: dict[str, VideoStorage | None] = {"none": None, "folder": FolderStorage(root, root / "videos")}
        for server in servers:
            stores[server.kind] = BucketStorage(BucketURL("bench", "v/"), root / "staging", 300, server.client())
        renderer.render(request, lambda step, total: None)  # first-call costs out of the way
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in stores}
        for _ in range(runs):
            for name, storage in stores.items():  # interleaved, so drift hits each alike
                samples[name].append(timed_render(renderer, request, storage))
        base_s = statistics.median(sample["denoise_s"] for sample in samples["none"])
        figures: dict[str, Any] = {
            "runs": runs,
            "request": request.model_dump(mode="json"),
            "denoise_median_s_without": round(base_s, 4),
        }
        for name in stores:
            if name == "none":
                continue
            saves = [seconds for sample in samples[name] for seconds in sample["saves"]]
            denoise_s = statistics.median(sample["denoise_s"] for sample in samples[name])
            figures[name] = {
                "checkpoint_median_ms": round(statistics.median(saves) * 1000, 2),
                "checkpoint_bytes": samples[name][0]["sizes"][0],
                "denoise_ratio_every_step": round(denoise_s / base_s, 3),
                "per_step_ms_without": round(base_s / steps * 1000, 2),
            }
        figures["full_size_latents_bytes"] = {f"{frames}_frames": full_size_bytes(frames) for frames in (85, 163)}
        return figures
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.steps), indent=2))


if __name__ == "__main__":
    main()
