"""Finding the host's GPUs without torch, and pinning app.py's workers to them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mochi_app.gpus import shown_gpu, visible_gpus, worker_gpus


def fake_nvidia_smi(folder: Path, script: str) -> dict[str, str]:
    """A PATH whose `nvidia-smi` runs `script` (the driver's tool, as a host without GPUs cannot have it)."""
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0,1", ["0", "1"]), ("2", ["2"]), ("GPU-8a1c,GPU-77f0", ["GPU-8a1c", "GPU-77f0"]), ("", []), ("-1", []),
     ("1,-1,0", ["1"])],
)  # fmt: skip
def test_cuda_visible_devices_wins(tmp_path: Path, value: str, expected: list[str]) -> None:
    env = fake_nvidia_smi(tmp_path, "echo 0; echo 1; echo 2; echo 3")
    assert visible_gpus({**env, "CUDA_VISIBLE_DEVICES": value}) == expected


def test_nvidia_smi_lists_the_host_gpus(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path, 'test "$1" = --query-gpu=index && echo 0 && echo 1')
    assert visible_gpus(env) == ["0", "1"]


def test_no_driver_or_a_failing_one_shows_no_gpu(tmp_path: Path) -> None:
    assert visible_gpus({"PATH": str(tmp_path)}) == []
    broken = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert visible_gpus(broken) == []


def test_auto_runs_one_worker_per_gpu_or_one_on_the_cpu() -> None:
    assert worker_gpus(None, ["0", "1", "2"]) == ["0", "1", "2"]
    assert worker_gpus(None, []) == [None]


def test_a_fixed_count_shares_the_gpus_out_in_turn() -> None:
    assert worker_gpus(3, ["0", "1"]) == ["0", "1", "0"]
    assert worker_gpus(2, []) == [None, None]
    assert worker_gpus(0, ["0"]) == []


FAKE_H100 = 'case "$1" in --query-gpu=index) echo 0 ;; *) echo "0, NVIDIA H100 80GB HBM3, 470.82.01" ;; esac'


def test_a_shown_gpu_is_described_by_name_and_driver(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path, FAKE_H100)
    assert shown_gpu(env) == "GPU 0 (NVIDIA H100 80GB HBM3, driver 470.82.01)"
    assert shown_gpu({**env, "CUDA_VISIBLE_DEVICES": "-1"}) is None  # hidden on purpose


@pytest.mark.parametrize(
    ("devices", "expected"),
    [("0", "NVIDIA_VISIBLE_DEVICES=0"), ("GPU-8a1c", "NVIDIA_VISIBLE_DEVICES=GPU-8a1c"), ("all", None),
     ("void", None), ("", None)],
)  # fmt: skip
def test_nvidia_visible_devices_counts_when_it_names_devices(devices: str, expected: str | None) -> None:
    assert shown_gpu({"PATH": "/nonexistent", "NVIDIA_VISIBLE_DEVICES": devices}) == expected
