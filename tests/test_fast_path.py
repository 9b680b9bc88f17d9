"""The worker's fast path: the attention processors and compiled blocks leave the video as it was; the step cache is
opt-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import MochiAttention, MochiAttnProcessor2_0
from torch._dynamo.testing import CompileCounter

from mochi_app.config import Settings
from mochi_app.fast_path import (
    BatchedMochiAttnProcessor,
    FastPath,
    PrefixMochiAttnProcessor,
    compile_blocks,
    installed_fast_path,
    text_lengths,
)
from mochi_app.loader import fast_path_for, load_renderer
from mochi_app.renderer import MochiRenderer
from mochi_app.schemas import GenerationRequest
from tests.harness import SMALL

# A few frames at the smallest size, for the checks that render many times.
QUICK = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}


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
@pytest.mark.parametrize("attention_kind", ["prefix", "masked"])
@pytest.mark.parametrize(
    "lengths",
    # Prompts of 5 real tokens, all 12 and none (an empty negative prompt is zeroed out); one alone (no guidance).
    [[5, 12, 0], [7]],
    ids=["three_lengths", "batch_of_one"],
)
def test_attention_matches_diffusers_in_float32(
    context_pre_only: bool, attention_kind: str, lengths: list[int]
) -> None:
    attn = attention(context_pre_only)
    batch = len(lengths)
    video, prompt = torch.randn(batch, 20, 32), torch.randn(batch, 12, 24)
    mask = torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]
    rotary = (torch.randn(20, 4, 4), torch.randn(20, 4, 4))
    with torch.inference_mode():
        expected = attn(video, encoder_hidden_states=prompt, attention_mask=mask, image_rotary_emb=rotary)
        if attention_kind == "prefix":
            processor = PrefixMochiAttnProcessor()
            processor.text_lengths = torch.tensor(lengths)
            attn.processor = processor
        else:
            attn.processor = BatchedMochiAttnProcessor()
        got = attn(video, encoder_hidden_states=prompt, attention_mask=mask, image_rotary_emb=rotary)
    for got_part, expected_part in zip(got, expected, strict=True):
        torch.testing.assert_close(got_part, expected_part, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def tiny(data_dir: Path, **fast_path: Any) -> MochiRenderer:
    return load_renderer(Settings(data_dir=data_dir, model="tiny", **fast_path))


def request_of(**params: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"prompt": "a red fox runs", "negative_prompt": "fog", "seed": 3, **params})


def frames_of(renderer: MochiRenderer, **params: Any) -> np.ndarray:
    return renderer.render(request_of(**{**SMALL, **params}), on_step=lambda step, total: None).frames


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> MochiRenderer:
    return tiny(data_dir, attention="diffusers", compile_blocks="off")


# Prompts of different lengths, an empty negative prompt, and one prompt alone (guidance 1: a batch of one).
PROMPTS = [
    {"prompt": "a red fox runs through fresh snow at dawn", "negative_prompt": "fog"},
    {"prompt": "a cat", "negative_prompt": "dark blue sky over the sea, slow motion"},
    {"prompt": "a bird flies over the river", "negative_prompt": ""},
    {"prompt": "a horse", "negative_prompt": "rain", "guidance_scale": 1.0},
]


@pytest.mark.parametrize("params", PROMPTS, ids=["longer_prompt", "longer_negative", "empty_negative", "no_guidance"])
def test_the_renderer_counts_each_prompt_as_the_pipelines_mask_does(reference: MochiRenderer, params: Any) -> None:
    request = request_of(**params)
    pipe = reference.pipe
    guided = request.guidance_scale > 1
    with torch.inference_mode():
        _, mask, _, negative_mask = pipe.encode_prompt(
            request.prompt, request.negative_prompt or None, do_classifier_free_guidance=guided, device="cpu"
        )
    masks = [negative_mask, mask] if guided else [mask]
    assert reference.text_lengths(request) == [int(m.sum()) for m in masks]


def transformer_outputs(renderer: MochiRenderer, request: GenerationRequest) -> list[torch.Tensor]:
    """What the transformer returns at each step of one render."""
    outputs: list[torch.Tensor] = []
    hook = renderer.pipe.transformer.register_forward_hook(lambda module, args, output: outputs.append(output[0]))
    try:
        renderer.render(request, on_step=lambda step, total: None)
    finally:
        hook.remove()
    return outputs


@pytest.mark.parametrize("params", PROMPTS, ids=["longer_prompt", "longer_negative", "empty_negative", "no_guidance"])
def test_prefix_attention_denoises_as_diffusers_does(data_dir: Path, reference: MochiRenderer, params: Any) -> None:
    prefix = tiny(data_dir, attention="prefix", compile_blocks="off")
    request = request_of(**QUICK, **params)
    got, expected = transformer_outputs(prefix, request), transformer_outputs(reference, request)
    assert len(got) == len(expected) == QUICK["num_inference_steps"]
    for got_step, expected_step in zip(got, expected, strict=True):
        assert got_step.shape[0] == (2 if request.guidance_scale > 1 else 1)
        torch.testing.assert_close(got_step, expected_step, rtol=0, atol=1e-5)


def test_prefix_attention_refuses_to_guess_the_prompt_lengths(data_dir: Path) -> None:
    renderer = tiny(data_dir, attention="prefix", compile_blocks="off")
    renderer.render(request_of(**QUICK), on_step=lambda step, total: None)  # the lengths are cleared after it
    with pytest.raises(ValueError, match="needs each prompt's real token count"), torch.inference_mode():
        renderer.pipe(prompt="a red fox", output_type="latent", **QUICK)
    too_few = pytest.raises(ValueError, match=r"text_lengths \[3\] do not fit a batch of 2")
    with too_few, torch.inference_mode(), text_lengths(renderer.pipe, [3]):
        renderer.pipe(prompt="a red fox", output_type="latent", **QUICK)


def graphs_made(renderer: MochiRenderer, requests: list[dict[str, Any]]) -> list[int]:
    """Graphs compiled so far after each render, the blocks compiled by a counting backend (dynamo alone)."""
    counter = CompileCounter()
    compile_blocks(renderer.pipe, backend=counter)
    counts = []
    for params in requests:
        renderer.render(request_of(**params), on_step=lambda step, total: None)
        counts.append(counter.frame_count)
    return counts


# Other prompt lengths, frame counts and sizes, then the same without guidance (a batch of one).
SHAPES = [
    {**QUICK, **PROMPTS[0]},
    {**QUICK, **PROMPTS[1], "num_frames": 13},
    {**QUICK, **PROMPTS[2], "num_frames": 19, "height": 96},
    {**QUICK, **PROMPTS[0], "width": 96},
    {**QUICK, **PROMPTS[3]},
    {**QUICK, **PROMPTS[3], "prompt": "a dog runs over the green hill", "num_frames": 13, "height": 96},
]


def test_compiled_blocks_make_no_new_graph_for_other_prompt_lengths_frame_counts_or_sizes(data_dir: Path) -> None:
    counts = graphs_made(tiny(data_dir, attention="prefix", compile_blocks="off"), SHAPES)
    # Two graphs: the blocks, and the last block (no prompt output); a batch of one is specialised once more.
    assert counts == [2, 2, 2, 2, 4, 4]


def test_diffusers_attention_compiles_again_for_each_prompt_length(data_dir: Path) -> None:
    """What the counting above would catch: the graph break at torch.nonzero is specialised on the prompt length."""
    counts = graphs_made(tiny(data_dir, attention="diffusers", compile_blocks="off"), SHAPES[:2])
    assert counts[1] > counts[0]


def test_fast_path_follows_the_settings() -> None:
    defaults = Settings()
    assert fast_path_for(defaults, cuda_available=True) == FastPath(attention="prefix", compile_blocks=True)
    assert fast_path_for(defaults, cuda_available=False) == FastPath(attention="prefix")
    switched_off = Settings(compile_blocks="off", attention="diffusers", step_cache=0.1)
    assert fast_path_for(switched_off, cuda_available=True) == FastPath(attention="diffusers", step_cache_threshold=0.1)
    assert FastPath(attention="diffusers").describe() == "none"


def test_compiled_blocks_with_prefix_attention_render_the_reference_video(
    data_dir: Path, reference: MochiRenderer
) -> None:
    fast = tiny(data_dir, compile_blocks="on")
    assert fast.fast_path == installed_fast_path(fast.pipe) == FastPath(attention="prefix", compile_blocks=True)
    assert psnr_db(frames_of(fast), frames_of(reference)) >= 35
    # Compiled for any size: another shape needs no new graph and matches the reference too.
    assert psnr_db(frames_of(fast, height=96, width=64), frames_of(reference, height=96, width=64)) >= 35


def test_step_cache_is_opt_in_and_changes_the_video(data_dir: Path, reference: MochiRenderer) -> None:
    cached = tiny(data_dir, compile_blocks="off", step_cache=0.5)
    assert installed_fast_path(cached.pipe) == FastPath(attention="prefix", step_cache_threshold=0.5)
    frames = frames_of(cached, num_inference_steps=8)
    assert frames.shape == frames_of(reference, num_inference_steps=8).shape
    assert not np.array_equal(frames, frames_of(reference, num_inference_steps=8))


def test_a_compiler_that_fails_at_warm_up_leaves_the_worker_rendering_uncompiled(data_dir: Path) -> None:
    renderer = tiny(data_dir, compile_blocks="off")

    def broken_compiler(graph: Any, example_inputs: Any) -> Any:
        raise RuntimeError("no C compiler on this host")

    compile_blocks(renderer.pipe, backend=broken_compiler)
    renderer.fast_path = FastPath(compile_blocks=True)
    assert installed_fast_path(renderer.pipe).compile_blocks
    assert renderer.warm_up() > 0
    assert renderer.fast_path == installed_fast_path(renderer.pipe) == FastPath()
    assert frames_of(renderer).shape[0] == SMALL["num_frames"]
