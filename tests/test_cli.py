"""`python -m mochi_app`: one-off renders, help on every command, one-line errors with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest

from tests.harness import REPO

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


def run_cli(*args: str, data_dir: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(data_dir), "MOCHI_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "mochi_app", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_generate_renders_one_prompt_to_one_mp4_without_a_queue(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    result = run_cli(
        "generate", "a prompt",
        "--num-frames", "31", "--height", "96", "--width", "160", "--num-inference-steps", "4", "--seed", "7",
        "--out", str(out),
        data_dir=tmp_path / "fresh",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "TINY random-weight model" in result.stderr
    reader = imageio.get_reader(out, "ffmpeg")
    assert (reader.count_frames(), reader.get_meta_data()["size"]) == (31, (160, 96))


@pytest.mark.parametrize("command", [[], ["serve"], ["worker"], ["generate"]])
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(*command, "--help", data_dir=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m mochi_app")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "a cat", "--bogus"], "unrecognized arguments: --bogus"),
        (["generate", "a cat", "--height", "tall"], "argument --height: invalid int value: 'tall'"),
        (["generate", "a cat", "--height", "850"], "height must be a multiple of 16, got 850"),
        (["generate", "   "], "prompt must not be empty"),
        (["paint"], "invalid choice: 'paint'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(*args, data_dir=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_bad_settings_exit_2_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MOCHI_DATA_DIR": str(tmp_path), "MOCHI_OFFLOAD": "disk"}
    result = subprocess.run(
        [sys.executable, "-m", "mochi_app", "worker"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "python -m mochi_app: error: MOCHI_OFFLOAD must be one of auto, none, model, sequential, got 'disk'"
    )


def test_a_worker_without_a_queue_server_says_how_to_get_one(tmp_path: Path) -> None:
    result = run_cli("worker", data_dir=tmp_path)
    assert result.returncode == 1
    assert "no queue server: set MOCHI_REDIS_URL, or start `python app.py`" in result.stderr


def test_serve_without_a_queue_server_says_how_to_get_one(tmp_path: Path) -> None:
    result = run_cli("serve", data_dir=tmp_path)
    assert result.returncode == 1
    assert "no queue server: set MOCHI_REDIS_URL, or start `python app.py`" in result.stderr
    assert "Traceback" not in result.stderr
