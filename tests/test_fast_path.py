"""The worker's fast path: batched attention and compiled blocks leave the video as it was; the step cache is opt-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import MochiAttention, MochiAttnProcessor2_0

from mochi_app.config import Settings
from mochi_app.fast_path import BatchedMochiAttnProcessor, FastPath
from mochi_app.loader import fast_path_for, load_renderer
from mochi_app.renderer import MochiRenderer
from mochi_app.schemas import GenerationRequest
from tests.harness import SMALL


def psnr_db(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def attention(context_pre_only: bool) -> MochiAttention:
    torch.manual_seed(0)
    return MochiAttention(
        query_dim=32, added_kv_proj_dim=24, processor=MochiAttnProcessor2_0(), heads=4, dim_head=8,
        bias=False, added_proj_bias=False, out_dim=32, out_context_dim=24, context_pre_only=context_pre_only, eps=1e-5,
    )  # fmt: skip


@pytest.mark.parametrize("context_pre_only", [False, True])
def test_batched_attention_matches_the_reference_for_prompts_of_different_lengths(context_pre_only: bool) -> None:
    attn = attention(context_pre_only)
    video, prompt = torch.randn(3, 20, 32), torch.randn(3, 12, 24)
    # Three prompts: 5 real tokens, all 12, and none (an empty negative prompt is zeroed out).
    mask = torch.arange(12)[None, :] < torch.tensor([[5], [12], [0]])
    rotary = (torch.randn(20, 4, 4), torch.randn(20, 4, 4))
    with torch.inference_mode():
        expected = attn(video, encoder_hidden_states=prompt, attention_mask=mask, image_rotary_emb=rotary)
        attn.processor = BatchedMochiAttnProcessor()
        got = attn(video, encoder_hidden_states=prompt, attention_mask=mask, image_rotary_emb=rotary)
    for got_part, expected_part in zip(got, expected, strict=True):
        torch.testing.assert_close(got_part, expected_part, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def tiny(data_dir: Path, **fast_path: Any) -> MochiRenderer:
    return load_renderer(Settings(data_dir=data_dir, model="tiny", **fast_path))


def frames_of(renderer: MochiRenderer, **params: Any) -> np.ndarray:
    request = GenerationRequest.model_validate(
        {"prompt": "a red fox runs", "negative_prompt": "fog", "seed": 3, **SMALL, **params}
    )
    return renderer.render(request, on_step=lambda step, total: None).frames


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> MochiRenderer:
    return tiny(data_dir, batched_attention=False, compile_blocks="off")


def test_fast_path_follows_the_settings() -> None:
    defaults = Settings()
    assert fast_path_for(defaults, cuda_available=True) == FastPath(batched_attention=True, compile_blocks=True)
    assert fast_path_for(defaults, cuda_available=False) == FastPath(batched_attention=True)
    switched_off = Settings(compile_blocks="off", batched_attention=False, step_cache=0.1)
    assert fast_path_for(switched_off, cuda_available=True) == FastPath(step_cache_threshold=0.1)
    assert FastPath().describe() == "none"


def test_compiled_blocks_with_batched_attention_render_the_reference_video(
    data_dir: Path, reference: MochiRenderer
) -> None:
    fast = tiny(data_dir, batched_attention=True, compile_blocks="on")
    assert fast.fast_path == FastPath(batched_attention=True, compile_blocks=True)
    assert psnr_db(frames_of(fast), frames_of(reference)) >= 35
    # Compiled for any size: another shape needs no new graph and matches the reference too.
    assert psnr_db(frames_of(fast, height=96, width=64), frames_of(reference, height=96, width=64)) >= 35


def test_step_cache_is_opt_in_and_changes_the_video(data_dir: Path, reference: MochiRenderer) -> None:
    cached = tiny(data_dir, compile_blocks="off", step_cache=0.5)
    frames = frames_of(cached, num_inference_steps=8)
    assert frames.shape == frames_of(reference, num_inference_steps=8).shape
    assert not np.array_equal(frames, frames_of(reference, num_inference_steps=8))


def test_a_compiler_that_fails_at_warm_up_leaves_the_worker_rendering_uncompiled(data_dir: Path) -> None:
    renderer = tiny(data_dir, compile_blocks="off")

    def broken_compiler(graph: Any, example_inputs: Any) -> Any:
        raise RuntimeError("no C compiler on this host")

    for block in renderer.pipe.transformer.transformer_blocks:
        block.compile(backend=broken_compiler)
    renderer.fast_path = FastPath(batched_attention=True, compile_blocks=True)
    assert renderer.warm_up() > 0
    assert renderer.fast_path == FastPath(batched_attention=True)
    assert frames_of(renderer).shape[0] == SMALL["num_frames"]
