"""Which GPUs this host shows, found without importing torch (app.py's launcher stays light)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

NVIDIA_SMI_TIMEOUT_S = 10.0
HIDDEN = {"", "-1", "NoDevFiles"}


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPU ids a CUDA process started with `environ` would see, as CUDA_VISIBLE_DEVICES spells them.

    CUDA_VISIBLE_DEVICES wins when set (a Space, a container or a scheduler may have narrowed it);
    otherwise `nvidia-smi` lists the host's GPUs. No driver, no GPUs.
    """
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [part.strip() for part in environ["CUDA_VISIBLE_DEVICES"].split(",")]
        # CUDA stops at the first invalid entry; "-1" and "" hide every device.
        visible = []
        for gpu in ids:
            if gpu in HIDDEN:
                break
            visible.append(gpu)
        return visible
    return [row[0] for row in _nvidia_smi(environ, "index") if row[0].isdigit()]


def shown_gpu(environ: Mapping[str, str]) -> str | None:
    """The GPU this host shows a CUDA process, described for a message (name and driver); None without one.

    nvidia-smi answers from the driver whatever torch can do, so it also sees a GPU whose driver is too
    old for torch's CUDA. NVIDIA_VISIBLE_DEVICES counts when it names devices: CUDA base images set
    it to `all` even where no GPU was passed in.
    """
    if "CUDA_VISIBLE_DEVICES" in environ and not visible_gpus(environ):
        return None  # hidden on purpose
    rows = [row for row in _nvidia_smi(environ, "index,name,driver_version") if len(row) == 3]
    if rows:
        index, name, driver = rows[0]
        return f"GPU {index} ({name}, driver {driver})"
    devices = environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if devices and devices.lower() not in {"all", "void", "none"}:
        return f"NVIDIA_VISIBLE_DEVICES={devices}"
    return None


def _nvidia_smi(environ: Mapping[str, str], fields: str) -> list[list[str]]:
    """nvidia-smi's CSV rows for `fields`, one per GPU; none without a driver that answers."""
    nvidia_smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if nvidia_smi is None:
        return []
    try:
        listing = subprocess.run(
            [nvidia_smi, f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []  # a driver that does not answer shows no usable GPU
    rows = [[part.strip() for part in line.split(",")] for line in listing.stdout.splitlines()]
    return [row for row in rows if row and row[0]]


def worker_gpus(workers: int | None, gpus: list[str]) -> list[str | None]:
    """The GPU each of app.py's workers is pinned to (None: not pinned), one entry per worker.

    `workers=None` (MOCHI_WORKERS=auto) means one worker per GPU, or one CPU worker without any;
    a fixed count shares the GPUs out in turn.
    """
    if workers is None:
        return list(gpus) or [None]
    return [gpus[index % len(gpus)] if gpus else None for index in range(workers)]
