"""Free space where the studio writes: below the floor it takes no new work, before a write can fail."""

from __future__ import annotations

import shutil
from pathlib import Path

from mochi_app.config import Settings

RETRY_AFTER_S = 60


class LowOnDisk(RuntimeError):
    """Less than `MOCHI_MIN_FREE_DISK_BYTES` is free where videos or the queue server's data go."""


def check_free_space(settings: Settings) -> None:
    """LowOnDisk when a folder the studio fills (the videos, the embedded server's files) is nearly full.

    The embedded server stops for good on a failed append-only write, and a video that cannot be written
    burns the GPU time it took: refusing new work first keeps both from happening.
    """
    folders = [settings.videos_dir] + ([settings.redis_dir] if settings.redis_url is None else [])
    for folder in folders:
        free = shutil.disk_usage(_existing(folder)).free
        if free < settings.min_free_disk_bytes:
            raise LowOnDisk(
                f"the server is nearly out of disk space ({free / 2**20:.0f} MiB free where it keeps "
                f"{folder.name}); it takes no new jobs until an operator frees some. Try again later."
            )


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (a new data folder has no videos folder yet)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
