"""Fetching a hub model before loading: which files, and how many of their bytes are on disk."""

from __future__ import annotations

from pathlib import Path

from mochi_app.download import DownloadMeter, DownloadPlan, PlannedFile, needed_files

# genmo/mochi-1-preview's files, as its hub listing names them (fp32 and bf16 side by side; T5 in fp32 only).
REAL_REPO_FILES = [
    ".gitattributes",
    "README.md",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00004.safetensors",
    "text_encoder/model-00002-of-00004.safetensors",
    "text_encoder/model-00003-of-00004.safetensors",
    "text_encoder/model-00004-of-00004.safetensors",
    "text_encoder/model.safetensors.index.json",
    "tokenizer/added_tokens.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/spiece.model",
    "tokenizer/tokenizer_config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model-00001-of-00005.safetensors",
    "transformer/diffusion_pytorch_model-00005-of-00005.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "transformer/diffusion_pytorch_model.bf16-00001-of-00003.safetensors",
    "transformer/diffusion_pytorch_model.bf16-00003-of-00003.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.bf16.json",
    "transformer/pytorch_model.bin",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.bf16.safetensors",
    "weights/dit.safetensors",  # genmo's own checkpoint, outside the pipeline's folders
]
COMPONENTS = ["scheduler", "text_encoder", "tokenizer", "transformer", "vae"]


def test_the_bf16_variant_where_a_component_has_it_and_plain_weights_where_it_does_not() -> None:
    chosen = needed_files(REAL_REPO_FILES, COMPONENTS, "bf16")
    assert chosen == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        *(f"text_encoder/{name}" for name in ["config.json", "model.safetensors.index.json"]),
        *(f"text_encoder/model-0000{n}-of-00004.safetensors" for n in range(1, 5)),
        *(f"tokenizer/{name}" for name in ["added_tokens.json", "special_tokens_map.json", "spiece.model"]),
        "tokenizer/tokenizer_config.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.bf16-00001-of-00003.safetensors",
        "transformer/diffusion_pytorch_model.bf16-00003-of-00003.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.bf16.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bf16.safetensors",
    }


def test_without_a_variant_only_the_plain_weights() -> None:
    chosen = needed_files(REAL_REPO_FILES, COMPONENTS, None)
    assert "transformer/diffusion_pytorch_model-00001-of-00005.safetensors" in chosen
    assert "vae/diffusion_pytorch_model.safetensors" in chosen
    assert not any(".bf16" in path or path.endswith(".bin") for path in chosen)


def test_the_meter_counts_finished_blobs_and_the_newest_partial_file(tmp_path: Path) -> None:
    plan = DownloadPlan(
        repo_id="genmo/mochi-1-preview",
        commit="0" * 40,
        files=(PlannedFile("a.safetensors", 1000, "aaa"), PlannedFile("b.safetensors", 3000, "bbb")),
    )
    meter = DownloadMeter(plan, tmp_path)
    assert meter.done_bytes() == 0 and meter.measure().fraction == 0.0
    (tmp_path / "aaa").write_bytes(b"x" * 1000)
    (tmp_path / "bbb.1234abcd.incomplete").write_bytes(b"x" * 500)
    progress = meter.measure()
    assert (progress.done_bytes, progress.total_bytes) == (1500, 4000)
    assert progress.describe().startswith("1.5 kB of 4.0 kB (38%)")
