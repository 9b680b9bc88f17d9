"""Shared fixtures: a real Valkey server, the real tiny model, real worker processes (tests/harness.py starts them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import BucketURL, Settings
from mochi_app.queue import JobQueue
from mochi_app.redis_server import EmbeddedServer
from mochi_app.tokens import TokenCounter
from tests.harness import GENEROUS, Child, Children, RunningApp, start_app, start_worker
from tests.s3_servers import KINDS, S3Server, start_s3_server

pytest_plugins = ["pytester"]  # tests/test_harness.py runs a failing test of its own


@pytest.fixture
def children() -> Iterator[Children]:
    """Start processes with this; each one is stopped when the test ends, however it ends."""
    started = Children()
    yield started
    started.stop_all()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the session: the tiny model is built into it once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """genmo/mochi-1-preview's files in its real layout, with tiny random weights (tests/hub_snapshot.py)."""
    from tests.hub_snapshot import write_repo

    return write_repo(tmp_path_factory.mktemp("hub-repo"))


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds that repo, as a finished download leaves it."""
    from tests.hub_snapshot import write_hub_cache

    home = tmp_path_factory.mktemp("hf-home")
    write_hub_cache(home)
    return home


@pytest.fixture(scope="session")
def hub_snapshot(hub_home: Path) -> Path:
    """The snapshot folder in `hub_home`'s cache: a local copy of the repo, as MOCHI_MODEL may name one."""
    from tests.hub_snapshot import COMMIT

    return hub_home / "hub" / "models--genmo--mochi-1-preview" / "snapshots" / COMMIT


@pytest.fixture(scope="session")
def redis_url(data_dir: Path) -> Iterator[str]:
    server = EmbeddedServer(data_dir / "redis")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(data_dir: Path, redis_url: str) -> Settings:
    """Settings on the tiny model, with a queue of this test's own."""
    return Settings(
        data_dir=data_dir, redis_url=redis_url, model="tiny", queue_name=f"test-{uuid.uuid4().hex[:8]}", **GENEROUS
    )


@pytest.fixture(scope="session")
def count_tokens() -> TokenCounter:
    return TokenCounter.tiny()


@pytest.fixture
def job_queue(redis: Redis, settings: Settings, count_tokens: TokenCounter) -> JobQueue:
    return JobQueue(redis, settings, count_tokens)


@pytest.fixture(scope="module")
def module_settings(data_dir: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=data_dir, redis_url=redis_url, model="tiny", queue_name=f"mod-{uuid.uuid4().hex[:8]}", **GENEROUS
    )


@pytest.fixture(scope="module")
def worker(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    """One worker process shared by a test module, on that module's own queue."""
    running = start_worker(module_settings, tmp_path_factory.mktemp("worker") / "worker.log")
    yield running
    running.stop()


@pytest.fixture
def worker_queue(module_settings: Settings, redis: Redis, count_tokens: TokenCounter) -> JobQueue:
    """A producer on the shared worker's queue."""
    return JobQueue(redis, module_settings, count_tokens)


@pytest.fixture(scope="session")
def studio_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """One `python app.py` shared by the end-to-end and browser tests."""
    app = start_app(tmp_path_factory.mktemp("app"))
    yield app
    app.child.stop()


@pytest.fixture(scope="session", params=KINDS)
def s3_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server on loopback, once per kind: nanio (checks signatures) and localbucket."""
    server = start_s3_server(request.param, tmp_path_factory.mktemp(request.param))
    yield server
    server.stop()


@pytest.fixture
def bucket_settings(
    settings: Settings, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """`settings` with videos in a new bucket of `s3_server`, a data folder of this test's own, and boto3's
    standard variables pointing this process at the server."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return replace(settings, data_dir=tmp_path / "data", storage=BucketURL(bucket, "videos/"))


@pytest.fixture
def two_accounts(redis: Redis) -> Iterator[tuple[str, str, str]]:
    """Two named accounts with API keys: the owner's name and key, and another account's key."""
    accounts = AccountStore(redis)
    owner, owner_key = accounts.create(f"owner-{uuid.uuid4().hex[:8]}")
    other, other_key = accounts.create(f"other-{uuid.uuid4().hex[:8]}")
    yield owner.name, owner_key, other_key
    accounts.revoke(owner.name)
    accounts.revoke(other.name)
