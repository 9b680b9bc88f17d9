"""Fetches a hub model's files into the Hugging Face cache before loading, reporting bytes done of total."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx2  # huggingface_hub 2.x's HTTP client: its network errors are these
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.file_download import repo_folder_name

from mochi_app.stages import DownloadProgress

log = logging.getLogger(__name__)

POLL_S = 0.5
RATE_WINDOW_S = 10.0
MODEL_INDEX = "model_index.json"
# Weight formats diffusers and transformers load only when safetensors are missing: never fetched.
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".pb", ".gguf")
SAFETENSORS = re.compile(r"\.safetensors(\.index(\.[^.]+)?\.json)?$")
# `name.bf16.safetensors`, `name.bf16-00001-of-00003.safetensors`, `name.safetensors.index.bf16.json`.
VARIANT = re.compile(
    r"^[^.]+\.(?P<file>[^.-]+)(-\d+-of-\d+)?\.safetensors$|^[^.]+\.safetensors\.index\.(?P<index>[^.]+)\.json$"
)

ProgressCallback = Callable[[DownloadProgress], None]


class HubUnreachable(RuntimeError):
    """The hub does not answer and the model is not in the cache either."""


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: str  # inside the repo
    size: int
    blob: str  # the cache's name for its content: the LFS sha256, or the git blob id


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    repo_id: str
    commit: str
    files: tuple[PlannedFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)


def model_folder(source: str, variant: str | None, on_progress: ProgressCallback) -> Path:
    """The folder to load `source` from: itself when it is a folder, else its hub snapshot, fetched first."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if constants.HF_HUB_OFFLINE:
        return cached_folder(source, "HF_HUB_OFFLINE is set")
    try:
        plan = plan_download(source, variant)
    except (httpx2.TransportError, OfflineModeIsEnabled) as exc:  # no network: a cached copy still serves
        log.warning("the hub does not answer (%s): loading %s from the cache", exc, source)
        return cached_folder(source, f"the hub does not answer ({exc})")
    log.info("%s: %d files, %.1f GB, at commit %s", source, len(plan.files), plan.total_bytes / 1e9, plan.commit[:12])
    meter = DownloadMeter(plan, _blobs_dir(source))
    stop = threading.Event()
    watcher = threading.Thread(target=meter.watch, args=(stop, on_progress), name="download-progress", daemon=True)
    watcher.start()
    try:
        folder = snapshot_download(source, revision=plan.commit, allow_patterns=[file.path for file in plan.files])
    finally:
        stop.set()
        watcher.join()
    on_progress(meter.measure())
    return Path(folder)


def cached_folder(source: str, why: str) -> Path:
    """The cached snapshot of `source`, without the network; HubUnreachable says why there is none."""
    try:
        return Path(snapshot_download(source, local_files_only=True))
    except LocalEntryNotFoundError:
        raise HubUnreachable(
            f"{why} and {source} is not in the cache at {constants.HF_HUB_CACHE}: "
            "let the worker reach the hub once, or set MOCHI_MODEL to a local copy"
        ) from None


def plan_download(repo_id: str, variant: str | None) -> DownloadPlan:
    """The files `from_pretrained(..., variant=variant)` reads, with their sizes, at the repo's current commit."""
    info = HfApi().model_info(repo_id, files_metadata=True)
    commit = str(info.sha)
    model_index = json.loads(Path(hf_hub_download(repo_id, MODEL_INDEX, revision=commit)).read_text())
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or []}
    chosen = needed_files(siblings, components(model_index), variant)
    files = []
    for path in sorted(chosen):
        sibling = siblings[path]
        blob = sibling.lfs.sha256 if sibling.lfs is not None else sibling.blob_id
        files.append(PlannedFile(path=path, size=int(sibling.size or 0), blob=str(blob)))
    return DownloadPlan(repo_id=repo_id, commit=commit, files=tuple(files))


def components(model_index: dict[str, object]) -> list[str]:
    """The pipeline's component folders, as `model_index.json` names them (`"vae": ["diffusers", ...]`)."""
    return [name for name, value in model_index.items() if not name.startswith("_") and isinstance(value, list)]


def needed_files(files: Iterable[str], folders: Iterable[str], variant: str | None) -> set[str]:
    """Each component's configs and tokenizer files, and its safetensors weights in `variant` where the
    component has them, else its plain ones: diffusers' per-component variant fallback."""
    files = list(files)
    chosen = {MODEL_INDEX} & set(files)
    for folder in folders:
        inside = [path for path in files if path.startswith(f"{folder}/") and "/" not in path[len(folder) + 1 :]]
        weights = [path for path in inside if SAFETENSORS.search(path)]
        chosen.update(path for path in inside if path not in weights and not path.endswith(OTHER_WEIGHTS))
        in_variant = [path for path in weights if variant is not None and _variant(path) == variant]
        chosen.update(in_variant or [path for path in weights if _variant(path) is None])
    return chosen


def _variant(path: str) -> str | None:
    match = VARIANT.match(path.rsplit("/", 1)[-1])
    return None if match is None else match["file"] or match["index"]


def _blobs_dir(repo_id: str) -> Path:
    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "blobs"


class DownloadMeter:
    """Bytes of a plan on disk: finished blobs, and the temporary `.incomplete` files huggingface_hub writes."""

    def __init__(self, plan: DownloadPlan, blobs: Path) -> None:
        self.plan = plan
        self.blobs = blobs
        self._samples: deque[tuple[float, int]] = deque()

    def done_bytes(self) -> int:
        return sum(self._on_disk(file) for file in self.plan.files)

    def _on_disk(self, file: PlannedFile) -> int:
        finished = self.blobs / file.blob
        if finished.exists():
            return file.size
        partial = sorted(self.blobs.glob(f"{file.blob}*.incomplete"), key=_mtime)
        return min(file.size, _size(partial[-1])) if partial else 0

    def measure(self) -> DownloadProgress:
        now, done = time.monotonic(), self.done_bytes()
        self._samples.append((now, done))
        while now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_at, first_done = self._samples[0]
        rate = (done - first_done) / (now - first_at) if now > first_at else None
        left = self.plan.total_bytes - done
        eta = left / rate if rate else None
        return DownloadProgress(done_bytes=done, total_bytes=self.plan.total_bytes, rate_bytes_per_s=rate, eta_s=eta)

    def watch(self, stop: threading.Event, on_progress: ProgressCallback) -> None:
        while not stop.wait(POLL_S):
            try:
                on_progress(self.measure())
            except Exception:  # a report that fails must not stop the download
                log.exception("could not report download progress")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place meanwhile
        return 0
