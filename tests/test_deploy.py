"""The Dockerfile, docker-compose.yml, .dockerignore and the Space's front matter agree with the code.

No Docker engine runs here, so nothing is built or started: the files are read (the Dockerfile by a
few lines of plain Python, the YAML files by PyYAML) and each value is held against what the code
accepts: the CLI's parser, `Settings.from_env`, `Settings().port`, requirements.txt.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from huggingface_hub import SpaceHardware

from mochi_app.cli import build_parser
from mochi_app.config import Settings
from tests.harness import REPO

PORT = Settings().port
HEALTHZ = f"http://127.0.0.1:{PORT}/healthz"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ENV, ...
    args: str  # the rest of the (joined) line

    def exec_form(self) -> list[str]:
        """`["python", "app.py"]` or `python app.py`, as a list of words."""
        return json.loads(self.args) if self.args.startswith("[") else shlex.split(self.args)


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions in order: comments dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return instructions


def only(keyword: str) -> Instruction:
    found = [instruction for instruction in dockerfile() if instruction.keyword == keyword]
    assert len(found) == 1, f"the Dockerfile should have one {keyword}, has {len(found)}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV":
            env.update(dict(word.split("=", 1) for word in shlex.split(instruction.args)))
    return env


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return dict(services[name])


def front_matter() -> dict[str, Any]:
    found = re.match(r"---\n(.*?)\n---\n", (REPO / "README.md").read_text(), re.DOTALL)
    assert found, "README.md should start with a --- YAML block (the Space's configuration)"
    loaded = yaml.safe_load(found.group(1))
    assert isinstance(loaded, dict)
    return loaded


def index_of(predicate: str, pattern: str) -> int:
    """Position of the first instruction `predicate` (a keyword) whose arguments match `pattern`."""
    for position, instruction in enumerate(dockerfile()):
        if instruction.keyword == predicate and re.search(pattern, instruction.args):
            return position
    pytest.fail(f"the Dockerfile has no {predicate} matching {pattern!r}")


def assert_is_a_command(words: list[str]) -> None:
    """`python -m mochi_app ...` parses with the CLI's own parser (which exits on an unknown command)."""
    assert words[:3] == ["python", "-m", "mochi_app"], words
    build_parser().parse_args(words[3:])


# The Dockerfile


def test_the_image_runs_app_py_by_default() -> None:
    assert only("CMD").exec_form() == ["python", "app.py"]
    assert (REPO / "app.py").is_file()


def test_the_image_exposes_and_probes_the_settings_port() -> None:
    assert only("EXPOSE").args == str(PORT)
    healthcheck = only("HEALTHCHECK").args
    assert "--start-period=" in healthcheck
    assert HEALTHZ in healthcheck


def test_the_data_dir_is_the_volume_and_holds_the_model_cache() -> None:
    env = image_env()
    assert env["MOCHI_DATA_DIR"] == only("VOLUME").args == "/data"
    assert PurePosixPath(env["HF_HOME"]).is_relative_to(env["MOCHI_DATA_DIR"])


def test_the_image_runs_as_uid_1000_who_owns_the_volume() -> None:
    assert only("USER").args.split(":")[0] == "1000"
    data_dir = image_env()["MOCHI_DATA_DIR"]
    assert index_of("RUN", rf"chown 1000:1000 {data_dir}\b") < index_of("VOLUME", data_dir)


def test_torch_is_pinned_as_in_requirements() -> None:
    required = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert required, "requirements.txt should pin torch"
    installed = re.search(r"pip install .*--index-url\s+\S+\s+torch==(\S+)", only_torch_install().args)
    assert installed, only_torch_install().args
    assert installed.group(1) == required.group(1)


def only_torch_install() -> Instruction:
    found = [i for i in dockerfile() if i.keyword == "RUN" and re.search(r"pip install\b.*\btorch==", i.args)]
    assert len(found) == 1, "the Dockerfile should install torch in one RUN of its own"
    return found[0]


def test_a_code_change_reinstalls_nothing() -> None:
    """torch, then requirements.txt copied and installed, then the code: each layer changes less often than the next."""
    torch = dockerfile().index(only_torch_install())
    copy_requirements = index_of("COPY", r"^requirements\.txt\s")
    install_requirements = index_of("RUN", r"pip install -r requirements\.txt")
    copy_code = min(index_of("COPY", r"^app\.py\s"), index_of("COPY", r"^mochi_app/?\s"))
    assert torch < copy_requirements < install_requirements < copy_code


def test_every_mochi_variable_in_the_image_is_a_setting() -> None:
    env = image_env()
    assert env["MOCHI_WORKERS"] == "auto"  # one worker per visible GPU
    settings = Settings.from_env(env)  # raises SettingsError on a value the code refuses
    assert settings.data_dir == Path(env["MOCHI_DATA_DIR"])
    assert settings.host == "0.0.0.0"
    assert settings.port == PORT


# .dockerignore


def ignored(path: str) -> bool:
    """Docker's rule, simplified for these paths: the last pattern that matches the path or a parent decides."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            verdict = not negated
    return verdict


@pytest.mark.parametrize(
    "path", [".git/HEAD", "data/videos/x.mp4", "data", "test-artifacts/a.png", "tests/conftest.py", ".venv/bin/python"]
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert ignored(path)


def test_the_build_context_keeps_what_the_dockerfile_copies() -> None:
    sources = [i.exec_form()[:-1] for i in dockerfile() if i.keyword == "COPY"]
    copied = [source for words in sources for source in words if not source.startswith("--")]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), source
        inside = sorted((REPO / source).rglob("*.py")) if (REPO / source).is_dir() else [REPO / source]
        for path in inside:
            assert not ignored(str(path.relative_to(REPO))), path


# docker-compose.yml


def test_compose_runs_real_commands() -> None:
    assert_is_a_command(service("web")["command"])
    assert_is_a_command(service("worker")["command"])
    assert service("web")["command"][3] == "serve"
    assert service("worker")["command"][3] == "worker"


def test_the_docs_run_real_commands() -> None:
    usage = re.search(r"\{([\w,]+)\}", build_parser().format_usage())  # usage: ... {serve,worker,...} ...
    assert usage, build_parser().format_usage()
    commands = usage.group(1).split(",")
    for path in ("README.md", "Dockerfile"):  # docker-compose.yml's are parsed whole above
        named = re.findall(r"python -m mochi_app (\w+)", (REPO / path).read_text())
        assert named, path
        assert set(named) <= set(commands), f"{path} names {set(named) - set(commands)}"


def test_compose_publishes_the_settings_port() -> None:
    host, container = service("web")["ports"][0].split(":")
    assert int(container) == PORT == int(host)


def test_compose_mounts_one_data_volume_where_the_image_keeps_it() -> None:
    data_dir = image_env()["MOCHI_DATA_DIR"]
    mounts = [service(name)["volumes"] for name in ("web", "worker")]
    assert mounts[0] == mounts[1]
    assert [mount.split(":")[1] for mount in mounts[0]] == [data_dir]
    assert mounts[0][0].split(":")[0] in compose()["volumes"]


def test_compose_settings_parse_and_reach_the_server() -> None:
    for name in ("web", "worker"):
        env = {**image_env(), **service(name).get("environment", {})}
        settings = Settings.from_env(env)
        assert settings.redis_url is not None
        match = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", settings.redis_url)
        assert match, settings.redis_url
        assert match.group(1) in compose()["services"]


def test_compose_server_acknowledges_only_what_reached_the_disk() -> None:
    command = " ".join(service("valkey")["command"])
    assert service("valkey")["image"].startswith("valkey/valkey:8.1")
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command


def test_compose_worker_reserves_one_nvidia_gpu() -> None:
    devices = service("worker")["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service("worker")["healthcheck"] == {"disable": True}


def test_web_and_worker_come_from_the_one_image() -> None:
    web, worker = service("web"), service("worker")
    assert web["build"] == worker["build"] == "."
    assert web["image"] == worker["image"]


# README front matter: the Hugging Face Space's configuration


def test_the_readme_configures_a_docker_space() -> None:
    space = front_matter()
    assert space["sdk"] == "docker"
    assert space["app_port"] == PORT
    assert space["hf_oauth"] is True
    assert space["suggested_hardware"] in {flavor.value for flavor in SpaceHardware}
    # Hugging Face ignores it now (a Space's disk is ephemeral; persistence is a bucket or an object store).
    assert "suggested_storage" not in space
    assert len(space["short_description"]) <= 60
    assert {"title", "emoji", "colorFrom", "colorTo", "pinned"} <= set(space)
