"""The renderer on the real tiny pipeline: model choice, determinism, progress, no silent truncation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mochi_app.checkpoints import Checkpoint, fingerprint, from_bytes, to_bytes
from mochi_app.config import Settings
from mochi_app.loader import (
    GIB,
    REAL_MODEL_ID,
    ModelUnavailable,
    check_gpu_usable,
    choose_device,
    choose_offload,
    cpu_threads,
    load_renderer,
    resolve_model,
    use_compile_caches,
)
from mochi_app.renderer import Checkpointing, MochiRenderer, PromptTooLong, is_out_of_memory, warm_up_shape
from mochi_app.schemas import GenerationRequest
from mochi_app.tiny_model import TINY_MODEL_DIRNAME, build_tiny_pipeline
from tests.harness import SMALL
from tests.test_gpus import FAKE_H100, fake_nvidia_smi


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> MochiRenderer:
    return load_renderer(Settings(data_dir=tmp_path_factory.mktemp("data"), model="tiny"))


def request(**params: object) -> GenerationRequest:
    return GenerationRequest.model_validate({"prompt": "a cat walks on the beach", "seed": 7, **SMALL, **params})


def test_auto_picks_the_real_model_only_with_cuda() -> None:
    assert resolve_model("auto", cuda_available=True) == REAL_MODEL_ID
    assert resolve_model("auto", cuda_available=False) == "tiny"
    assert resolve_model("/models/mochi", cuda_available=False) == "/models/mochi"


@pytest.mark.parametrize(
    ("free_gib", "expected"), [(79, "none"), (42, "none"), (40, "model"), (26, "model"), (24, "sequential")]
)
def test_auto_offload_follows_free_gpu_memory(free_gib: int, expected: str) -> None:
    assert choose_offload("auto", free_gib * GIB) == expected
    assert choose_offload("model", free_gib * GIB) == "model"


def test_tiny_model_is_saved_once_and_loaded_with_from_pretrained(renderer: MochiRenderer) -> None:
    assert renderer.model_name == "tiny" and renderer.is_tiny
    assert type(renderer.pipe).__name__ == "MochiPipeline"
    folder = Path(renderer.pipe.name_or_path)
    assert folder.name == TINY_MODEL_DIRNAME
    assert {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"} <= {
        p.name for p in folder.iterdir()
    }


def test_tiny_model_weights_are_the_same_every_build() -> None:
    first, second = build_tiny_pipeline(), build_tiny_pipeline()
    for a, b in zip(first.transformer.state_dict().values(), second.transformer.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy())


def test_renders_snapped_frames_at_the_asked_size_with_progress(renderer: MochiRenderer) -> None:
    steps: list[tuple[int, int]] = []
    rendering = renderer.render(request(num_frames=30), on_step=lambda step, total: steps.append((step, total)))
    assert rendering.frames.shape == (31, 96, 160, 3)
    assert rendering.frames.dtype == np.uint8
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert rendering.denoise_s > 0 and rendering.decode_s > 0
    assert rendering.peak_gpu_memory_bytes is None  # measured on CUDA only


def test_same_seed_same_frames_other_seed_other_frames(renderer: MochiRenderer) -> None:
    def frames(seed: int) -> np.ndarray:
        return renderer.render(request(seed=seed, num_frames=7), on_step=lambda step, total: None).frames

    first = frames(7)
    assert np.array_equal(first, frames(7))
    assert not np.array_equal(first, frames(8))


def test_a_raising_step_callback_stops_the_render(renderer: MochiRenderer) -> None:
    steps: list[int] = []

    def stop_at_two(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        renderer.render(request(num_inference_steps=10), on_step=stop_at_two)
    assert steps == [1, 2]


def test_a_prompt_the_pipeline_would_truncate_is_refused(renderer: MochiRenderer) -> None:
    long_prompt = "cat " * 300
    with pytest.raises(PromptTooLong, match="prompt is 301 tokens long; the limit is 256"):
        renderer.render(request(prompt=long_prompt), on_step=lambda step, total: None)


def test_tokens_are_counted_alike_with_and_without_torch(renderer: MochiRenderer) -> None:
    from mochi_app.tokens import TokenCounter

    counter = TokenCounter.tiny()
    texts = ["a cat", "A fox jumps over the lazy dog, slowly!", "zebra " * 40, "", "a  cat\n\tdog", "café ☕ 東京"]
    for text in [*texts, "<pad> </s> x"]:
        assert counter(text) == renderer.count_tokens(text)


@pytest.mark.cuda
def test_the_real_model_renders_on_cuda(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: the real genmo/mochi-1-preview path runs only where CUDA exists")
    renderer = load_renderer(Settings(data_dir=tmp_path, model="auto"))
    assert renderer.model_name == REAL_MODEL_ID
    assert renderer.pipe.transformer.dtype == torch.bfloat16
    assert renderer.pipe.vae.use_tiling
    rendering = renderer.render(request(num_frames=7, height=480, width=848, num_inference_steps=2), lambda s, t: None)
    assert rendering.frames.shape == (7, 480, 848, 3)
    assert rendering.peak_gpu_memory_bytes is not None and rendering.peak_gpu_memory_bytes > GIB


def test_cpu_workers_started_together_share_the_cores() -> None:
    assert [cpu_threads(workers, cores=8) for workers in (0, 1, 2, 3, 16)] == [8, 8, 4, 2, 1]
    assert cpu_threads(2, cores=2) == 1


def test_device_auto_means_cuda_only_where_torch_can_use_it() -> None:
    assert [choose_device("auto", cuda) for cuda in (True, False)] == ["cuda", "cpu"]
    assert choose_device("cpu", cuda_available=True) == "cpu"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_allocation_failures_of_cublas_and_cudnn_count_as_out_of_memory(error: Exception, expected: bool) -> None:
    assert is_out_of_memory(error) is expected


def test_a_gpu_torch_cannot_use_stops_auto_from_serving_noise(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path, FAKE_H100)
    with pytest.raises(ModelUnavailable) as caught:
        check_gpu_usable(Settings(model="auto"), env)
    message = str(caught.value)
    assert message.startswith("GPU 0 (NVIDIA H100 80GB HBM3, driver 470.82.01) is visible, but torch 2.13.0")
    assert message.endswith("set MOCHI_MODEL=tiny to try the studio without a GPU")
    check_gpu_usable(Settings(model="tiny"), env)  # asked for the tiny model: fine
    check_gpu_usable(Settings(model="auto", device="cpu"), env)  # asked for the CPU: fine
    check_gpu_usable(Settings(model="auto"), {"PATH": "/nonexistent"})  # no GPU at all: tiny, as before
    with pytest.raises(ModelUnavailable, match="MOCHI_DEVICE=cuda, but no GPU is usable"):
        check_gpu_usable(Settings(model="tiny", device="cuda"), {"PATH": "/nonexistent"})


def test_the_warm_up_renders_at_the_production_size_on_cuda_only(renderer: MochiRenderer) -> None:
    assert warm_up_shape("cuda:0", is_tiny=False) == {
        "num_frames": 7,
        "height": 480,
        "width": 848,
        "num_inference_steps": 2,
    }
    assert warm_up_shape("cpu", is_tiny=False)["height"] == 64
    assert warm_up_shape("cuda:0", is_tiny=True)["height"] == 64
    stages: list[tuple[str, str | None]] = []
    renderer.warm_up(lambda stage, detail=None, download=None: stages.append((stage, detail)))
    assert stages == [("warming_up", "a first 64x64 render")]


def test_compile_caches_go_to_the_data_folder_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/operators/own")
    use_compile_caches(tmp_path / "compile-cache")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile-cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == "/operators/own"


def test_a_render_resumed_from_a_checkpoint_has_every_pixel_of_the_whole_render(renderer: MochiRenderer) -> None:
    asked = request(num_frames=13, height=64, width=96, num_inference_steps=8, seed=3)
    saved: list[Checkpoint] = []
    whole = renderer.render(asked, lambda step, total: None, Checkpointing(every_steps=3, save=saved.append))
    assert [checkpoint.step for checkpoint in saved] == [3, 6, 8]  # and always after the last step

    steps: list[int] = []
    resumed = renderer.render(asked, lambda step, total: steps.append(step), Checkpointing(start=saved[0]))
    assert steps == [4, 5, 6, 7, 8] and resumed.resumed_from_step == 3
    assert np.array_equal(resumed.frames, whole.frames)
    assert "set_timesteps" not in vars(renderer.pipe.scheduler)  # the next job gets the whole schedule

    steps.clear()
    decoded = renderer.render(asked, lambda step, total: steps.append(step), Checkpointing(start=saved[-1]))
    assert steps == [] and np.array_equal(decoded.frames, whole.frames)  # denoising done: only the decode ran


def test_the_renderer_hands_the_middle_latent_frame_to_the_preview_every_few_steps_before_the_last(
    renderer: MochiRenderer,
) -> None:
    asked = request(num_frames=13, height=64, width=96, num_inference_steps=7, seed=3)
    shown: list[tuple[int, np.ndarray]] = []
    steps = Checkpointing(preview_every_steps=2, preview=lambda step, latent: shown.append((step, latent)))
    renderer.render(asked, lambda step, total: None, steps)
    assert [step for step, _ in shown] == [2, 4, 6]  # not the last: the decoded video comes next
    assert all(latent.shape == (12, 8, 12) and latent.dtype == np.float32 for _, latent in shown)  # size / 8
    assert not np.array_equal(shown[0][1], shown[-1][1])  # the denoising moved it


def test_a_checkpoint_is_used_only_for_its_own_request_and_model(renderer: MochiRenderer) -> None:
    asked = request(num_frames=7, num_inference_steps=2, seed=5)
    saved: list[Checkpoint] = []
    renderer.render(asked, lambda step, total: None, Checkpointing(every_steps=1, save=saved.append))
    data = to_bytes(saved[0], fingerprint(asked, "tiny"))
    read = from_bytes(data, fingerprint(asked, "tiny"), "job")
    assert read is not None and read.step == 1 and torch.equal(read.latents, saved[0].latents)
    assert from_bytes(data, fingerprint(asked.model_copy(update={"seed": 6}), "tiny"), "job") is None
    assert from_bytes(data, fingerprint(asked, "genmo/mochi-1-preview"), "job") is None
    assert from_bytes(data[: len(data) // 2], fingerprint(asked, "tiny"), "job") is None  # torn
    assert from_bytes(b"", fingerprint(asked, "tiny"), "job") is None
