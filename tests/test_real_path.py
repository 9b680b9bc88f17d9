"""The real model's path on a CPU: genmo/mochi-1-preview's layout with tiny weights, from a hub cache or hub."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
from redis import Redis

from mochi_app.config import Settings
from mochi_app.loader import REAL_MODEL_ID, load_renderer
from mochi_app.queue import JobQueue
from mochi_app.records import JobStatus
from mochi_app.renderer import MochiRenderer
from mochi_app.schemas import InvalidRequest
from mochi_app.served_model import ServedModels
from mochi_app.stages import Stage
from mochi_app.worker_state import WorkerState, WorkerStates
from tests.harness import REPO, Children, finished, free_port, new_account, wait_for, worker_env
from tests.hub_server import serve_hub
from tests.test_gpus import FAKE_H100, fake_nvidia_smi

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

# The tiny repo's bf16 files (about 1.8 MB) then take about 4 s to download: long enough to watch.
DOWNLOAD_BYTES_PER_S = 400_000
TINY_CLIP = ["--num-frames", "7", "--height", "64", "--width", "96", "--num-inference-steps", "2"]


def hub_env(hf_home: Path, **extra: str) -> dict[str, str]:
    """The real model on the CPU, from `hf_home`'s hub cache and nothing else."""
    return {
        "MOCHI_MODEL": REAL_MODEL_ID,
        "MOCHI_DEVICE": "cpu",
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **extra,
    }


def generate(data_dir: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(data_dir), "MOCHI_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "mochi_app", "generate", "a red fox", *TINY_CLIP, "--out", str(out)],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def real_renderer(hub_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> MochiRenderer:
    """The real path in this process, from the snapshot folder (a local copy of the repo, as MOCHI_MODEL allows)."""
    return load_renderer(Settings(data_dir=tmp_path_factory.mktemp("data"), model=str(hub_snapshot), device="cpu"))


def test_generate_renders_the_real_model_from_the_hub_cache_on_a_cpu(hub_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "fox.mp4"
    result = generate(tmp_path / "data", out, hub_env(hub_home))
    assert result.returncode == 0, result.stderr
    assert f"model {REAL_MODEL_ID} loaded" in result.stderr and "on cpu (torch.float32)" in result.stderr
    assert "TINY" not in result.stderr
    reader = imageio.get_reader(out, "ffmpeg")
    assert (reader.count_frames(), reader.get_meta_data()["size"]) == (7, (96, 64))


def test_the_real_path_loads_the_variant_with_tiling(real_renderer: MochiRenderer) -> None:
    pipe = real_renderer.pipe
    assert not real_renderer.is_tiny
    assert pipe.vae.use_tiling
    assert type(pipe.tokenizer).__name__ == "T5Tokenizer"  # transformers 5: T5TokenizerFast is T5Tokenizer
    assert pipe.tokenizer.pad_token_id == 0 and pipe.tokenizer.eos_token_id == 1
    stages: list[str] = []
    load_renderer(
        Settings(model=str(Path(pipe.name_or_path)), device="cpu", data_dir=Path(pipe.name_or_path).parent),
        lambda stage, detail=None, download=None: stages.append(stage),
    )
    assert stages == [Stage.LOADING, Stage.MOVING]  # a local copy: nothing to download


def pipe_attribute_paths(module: Path) -> set[tuple[str, ...]]:
    """Every `pipe.a.b` (or `self.pipe.a.b`) the module's code reaches, up to the first call or subscript."""
    paths = set()
    for found in ast.walk(ast.parse(module.read_text())):
        chain: list[str] = []
        node = found
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "pipe" and chain:
            paths.add(tuple(chain))
        elif isinstance(node, ast.Name) and node.id == "self" and chain[:1] == ["pipe"] and chain[1:]:
            paths.add(tuple(chain[1:]))
    return paths


def test_everything_the_worker_reaches_on_the_pipeline_exists_on_the_loaded_real_model(
    real_renderer: MochiRenderer,
) -> None:
    """A renamed or removed API (as `enable_vae_tiling` was in diffusers 0.42) fails here, on a CPU."""
    modules = ("mochi_app/loader.py", "mochi_app/renderer.py", "mochi_app/fast_path.py", "benchmarks/gpu_mochi.py")
    paths = set().union(*(pipe_attribute_paths(REPO / module) for module in modules))
    assert ("vae", "enable_tiling") in paths and ("enable_model_cpu_offload",) in paths
    missing = []
    for path in sorted(paths):
        target: object = real_renderer.pipe
        for name in path:
            if not hasattr(target, name):
                missing.append(".".join(("pipe", *path)))
                break
            target = getattr(target, name)
    assert missing == []


def test_every_library_call_of_the_real_path_exists_on_the_pinned_classes() -> None:
    """A renamed or removed API (as `enable_vae_tiling` was) fails here, on a CPU, not on a GPU's first start."""
    from diffusers import AutoencoderKLMochi, MochiPipeline
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    for method in ("from_pretrained", "to", "enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        assert callable(getattr(MochiPipeline, method)), method
    assert {"variant", "torch_dtype"} <= set(inspect.signature(MochiPipeline.from_pretrained).parameters) | {
        "variant",
        "torch_dtype",
    }
    assert callable(AutoencoderKLMochi.enable_tiling)
    called = set(inspect.signature(MochiPipeline.__call__).parameters)
    assert {
        *("prompt", "negative_prompt", "num_frames", "height", "width", "num_inference_steps", "guidance_scale"),
        *("generator", "output_type", "callback_on_step_end", "callback_on_step_end_tensor_inputs"),
        "max_sequence_length",
    } <= called
    assert {"revision", "allow_patterns", "local_files_only"} <= set(inspect.signature(snapshot_download).parameters)
    assert "files_metadata" in inspect.signature(HfApi.model_info).parameters
    assert "revision" in inspect.signature(hf_hub_download).parameters


def test_a_worker_on_the_real_model_completes_a_job_and_counts_tokens_as_it_does(
    settings: Settings, redis: Redis, hub_home: Path, real_renderer: MochiRenderer, tmp_path: Path, children: Children
) -> None:
    children.worker(settings, tmp_path / "worker.log", **hub_env(hub_home))
    cards = ServedModels(redis, settings.queue_name)
    card = cards.current()
    assert card is not None and (card.name, card.is_tiny) == (REAL_MODEL_ID, False)
    texts = ["a red fox", "A fox jumps over the lazy dog, slowly!", "café ☕ 東京", "a  cat\n\tdog", "<pad> </s> x"]
    for text in [*texts, "<extra_id_0> snow", "zebra " * 40]:
        assert cards.count_tokens(text) == real_renderer.count_tokens(text), text
    queue = JobQueue(redis, settings, cards.count_tokens)
    with pytest.raises(InvalidRequest, match=r"prompt is \d+ tokens long; the limit is 256"):
        queue.submit(new_account(), {"prompt": "snow " * 300})
    job = queue.submit(new_account(), {"prompt": "a red fox", "num_frames": 7, "height": 64, "width": 96})
    done = finished(queue, job.job_id, timeout_s=300)
    assert (done.status, done.model) == (JobStatus.COMPLETED, REAL_MODEL_ID), done.error
    assert done.output is not None and (done.output.width, done.output.height) == (96, 64)
    assert [state.stage for state in WorkerStates(redis, settings.queue_name, 15).all()] == [Stage.READY]


def test_without_protobuf_the_tokenizer_cannot_load(hub_snapshot: Path) -> None:
    """transformers builds T5's fast tokenizer from spiece.model only with protobuf: pinned for that."""
    code = (
        "import sys; sys.modules['google.protobuf'] = None; sys.modules['google'] = None\n"
        "from transformers import T5TokenizerFast\n"
        f"T5TokenizerFast.from_pretrained({str(hub_snapshot / 'tokenizer')!r})\n"
    )
    without = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert without.returncode != 0
    assert "`tiktoken` is required" in without.stderr  # transformers' words: it falls back from SentencePiece
    with_it = subprocess.run(
        [sys.executable, "-c", code.replace("sys.modules['google.protobuf'] = None; sys.modules['google'] = None", "")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert with_it.returncode == 0, with_it.stderr


def first_start_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    env = hub_env(hf_home, HF_ENDPOINT=endpoint)
    del env["HF_HUB_OFFLINE"]
    return env


def test_a_first_start_downloads_with_progress_then_loads(
    settings: Settings, redis: Redis, hub_repo: Path, tmp_path: Path, children: Children
) -> None:
    with serve_hub(hub_repo, bytes_per_s=DOWNLOAD_BYTES_PER_S) as hub:
        states = WorkerStates(redis, settings.queue_name, settings.heartbeat_ttl_s)
        seen: list[WorkerState] = []

        def ready() -> bool:
            seen.extend(states.all())
            return any(state.stage is Stage.READY for state in seen)

        env = worker_env(settings, **first_start_env(hub.endpoint, tmp_path / "hf"))
        worker = children.launch([sys.executable, "-m", "mochi_app", "worker"], env, tmp_path / "worker.log")
        wait_for(ready, 300, "the worker to download and load the model", interval_s=0.1)
        fetched = hub.fetched()
    downloads = [state.download for state in seen if state.download is not None]
    partway = [progress for progress in downloads if 0 < progress.done_bytes < progress.total_bytes]
    assert partway, f"no progress seen between 0 and the total: {[s.describe() for s in seen]}"
    assert all(p.total_bytes == partway[0].total_bytes for p in partway)
    order = [Stage.STARTING, Stage.DOWNLOADING, Stage.LOADING, Stage.MOVING, Stage.WARMING_UP, Stage.READY]
    polled = list(dict.fromkeys(state.stage for state in seen))  # a poll may miss a brief stage
    assert polled == sorted(polled, key=order.index) and Stage.DOWNLOADING in polled, polled
    # The console hears every stage, in order.
    logged = re.findall(r"mochi_app\.worker_state\[\d+\] job=-: worker \S+: ([a-z ]+)", worker.log)
    assert list(dict.fromkeys(words.replace(" ", "_") for words in logged)) == order[1:], worker.log
    assert "downloading: fetching genmo/mochi-1-preview (" in worker.log
    assert any(".bf16" in path for path in fetched)
    assert not any(path.startswith("transformer/diffusion_pytorch_model-") for path in fetched)  # no fp32 transformer


def test_a_gpu_torch_cannot_use_makes_generate_exit_2_with_one_line(hub_home: Path, tmp_path: Path) -> None:
    env = {**fake_nvidia_smi(tmp_path, FAKE_H100), "MOCHI_MODEL": "auto"}
    result = generate(tmp_path / "data", tmp_path / "noise.mp4", env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "python -m mochi_app generate: error: GPU 0 (NVIDIA H100 80GB HBM3, driver 470.82.01) is visible, but torch "
    )
    assert lines[0].endswith("set MOCHI_MODEL=tiny to try the studio without a GPU")
    assert not (tmp_path / "noise.mp4").exists()


def test_without_the_network_a_cached_model_still_loads_and_a_missing_one_says_why(
    hub_home: Path, tmp_path: Path
) -> None:
    unreachable = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    online = {key: value for key, value in hub_env(hub_home, **unreachable).items() if key != "HF_HUB_OFFLINE"}
    cached = generate(tmp_path / "data", tmp_path / "fox.mp4", online)
    assert cached.returncode == 0, cached.stderr
    assert "the hub does not answer" in cached.stderr and (tmp_path / "fox.mp4").is_file()
    missing = generate(tmp_path / "data", tmp_path / "none.mp4", {**online, "HF_HOME": str(tmp_path / "empty")})
    assert missing.returncode == 1
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m mochi_app generate: error: the hub does not answer (")
    assert last.endswith("is not in the cache at " + str(tmp_path / "empty" / "hub") + ": let the worker reach the hub "
                         "once, or set MOCHI_MODEL to a local copy")  # fmt: skip
    assert "Traceback" not in missing.stderr
