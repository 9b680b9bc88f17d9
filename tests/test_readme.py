"""The README's examples work as written, against `python app.py` (only the address is swapped)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import imageio.v3 as iio
import pytest
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.connections import recorded_url
from tests.harness import REPO, Children, RunningApp, free_port

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

README_URL = "http://127.0.0.1:7860"


def example(name: str) -> str:
    """The fenced code block that follows `<!-- example: NAME -->` in the README."""
    found = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert found, f"the README has no example named {name!r}"
    return found.group(1)


RUNNERS = {
    "gradio_client": ([sys.executable, "-c"], "fox.mp4"),
    "curl": (["bash", "-euo", "pipefail", "-c"], "boat.mp4"),
    "events": (["bash", "-euo", "pipefail", "-c"], "heron.mp4"),
    "openai": ([sys.executable, "-W", "ignore::DeprecationWarning", "-c"], "cub.mp4"),
    "sweep": (["bash", "-euo", "pipefail", "-c"], "kite.mp4"),
}


@pytest.mark.parametrize(("name", "command", "video"), [(name, *runner) for name, runner in RUNNERS.items()])
def test_readme_example_downloads_a_video(
    studio_app: RunningApp, tmp_path: Path, name: str, command: list[str], video: str
) -> None:
    code = example(name).replace(README_URL, studio_app.url)
    accounts = AccountStore(Redis.from_url(recorded_url(studio_app.data_dir / "redis")))
    env = {**os.environ, "MOCHI_API_KEY": accounts.create(f"readme-{uuid.uuid4().hex[:8]}")[1]}
    result = subprocess.run(
        [*command, code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr
    assert iio.imread(tmp_path / video).shape[:3] == (31, 240, 432)
    if name == "events":
        seen = result.stdout.split()
        assert seen[:4:2] == ["event:", "event:"] and seen[-1] == "job.completed", result.stdout
        assert seen.count("job.progress") == 16
    if name == "sweep":  # the final render it queued: the second seed's, with the Final steps
        final = json.loads(result.stdout.splitlines()[-1])
        httpx.post(f"{studio_app.url}/cancel/{final['job_id']}")  # later tests need not wait behind it
        assert final["request"]["num_inference_steps"] == 100 and final["batch_id"] is None


def test_readme_webhook_example_receives_verified_events(children: Children, tmp_path: Path) -> None:
    """Against an app.py of its own that may post to loopback, as the example says."""
    app = children.app(tmp_path, MOCHI_WEBHOOK_ALLOW_PRIVATE="true")
    code = example("webhooks").replace(README_URL, app.url).replace("8990", str(free_port()))
    env = {**os.environ, "MOCHI_DATA_DIR": str(app.data_dir), "PYTHONPATH": str(REPO)}  # as run from the clone
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = sorted((tmp_path / "events.txt").read_text().splitlines())
    assert events == ["job.completed COMPLETED", "job.running RUNNING"]
