"""The folders the studio writes: writable at start, and with room: below the floor it takes no new work."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mochi_app.config import Settings, SettingsError


class DataFolderUnusable(SettingsError):
    """A folder the studio must write cannot be written (read-only, not ours, not a folder)."""


class LowOnDisk(RuntimeError):
    """Less than `MOCHI_MIN_FREE_DISK_BYTES` is free where videos or the queue server's data go."""

    retry_after_s = 60  # a guess: space comes back as retention or the operator deletes videos


def check_free_space(settings: Settings) -> None:
    """LowOnDisk when a folder the studio fills (the videos, the embedded server's files) is nearly full.

    The embedded server stops for good on a failed append-only write, and a video that cannot be written
    burns the GPU time it took: refusing new work first keeps both from happening.
    """
    for folder in written_folders(settings):
        free = shutil.disk_usage(_existing(folder)).free
        if free < settings.min_free_disk_bytes:
            raise LowOnDisk(
                f"the server is nearly out of disk space ({free / 2**20:.0f} MiB free where it keeps "
                f"{folder.name}); it takes no new jobs until an operator frees some. Try again later."
            )


def written_folders(settings: Settings) -> list[Path]:
    """The videos (or the uploads' staging folder, and the models, the caches) and, when it is embedded,
    the queue server's files."""
    return [settings.staging_dir] + ([settings.redis_dir] if settings.redis_url is None else [])


def check_writable(settings: Settings) -> None:
    """DataFolderUnusable, in one line, when a folder the studio writes cannot be made or written."""
    for folder in [settings.data_dir, *written_folders(settings)]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            setting = "MOCHI_SERVER_DIR" if folder == settings.server_dir else "MOCHI_DATA_DIR"
            raise DataFolderUnusable(
                f"{folder} cannot be written ({reason}); point {setting} at a folder this user can write "
                f"(user id {os.getuid()})"
            ) from None


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (a new data folder has no videos folder yet)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
