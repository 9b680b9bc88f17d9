"""The stages a worker goes through as it starts, and a download's progress: plain values every side shares."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel


class Stage(StrEnum):
    STARTING = "starting"
    DOWNLOADING = "downloading"  # the model's files, into the Hugging Face cache
    LOADING = "loading"  # reading the weights into memory
    MOVING = "moving"  # to the GPU, or setting up offload
    WARMING_UP = "warming_up"  # a first render: compiling and tuning kernels
    READY = "ready"
    FAILED = "failed"

    @property
    def is_starting(self) -> bool:
        return self not in {Stage.READY, Stage.FAILED}


class DownloadProgress(BaseModel):
    done_bytes: int
    total_bytes: int
    rate_bytes_per_s: float | None = None  # over the last few seconds; None until measured
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total_bytes <= 0 else min(1.0, self.done_bytes / self.total_bytes)

    def describe(self) -> str:
        """`12.3 GB of 40.1 GB (31%), 85 MB/s, about 5 min left`."""
        text = f"{_size(self.done_bytes)} of {_size(self.total_bytes)} ({self.fraction:.0%})"
        if self.rate_bytes_per_s:
            text += f", {_size(self.rate_bytes_per_s)}/s"
        if self.eta_s is not None and self.done_bytes < self.total_bytes:
            text += f", about {_duration(self.eta_s)} left"
        return text


class StageReport(Protocol):
    """Told each stage as loading reaches it, with what it is doing and, while downloading, how far it got."""

    def __call__(self, stage: Stage, detail: str | None = None, download: DownloadProgress | None = None) -> None: ...


def _size(count: float) -> str:
    units = ("B", "kB", "MB", "GB")
    power = 0
    while count >= 1000 and power < len(units) - 1:
        count /= 1000
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {units[power]}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
