"""The embedded Valkey: starts from the pip-installed binary, is found by other processes, keeps data."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from redis import Redis

from mochi_app.config import Settings
from mochi_app.connections import QueueUnavailable, connect
from mochi_app.redis_server import EmbeddedServer, server_binary


def test_the_server_binary_comes_from_the_wheel() -> None:
    binary = server_binary()
    assert binary.name == "valkey-server" and os.access(binary, os.X_OK)


def test_other_processes_find_the_server_through_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    server = EmbeddedServer(settings.redis_dir)
    url = server.start()
    try:
        assert url == f"unix://{settings.redis_dir / 'valkey.sock'}"
        assert (settings.redis_dir / "server.url").read_text().strip() == url
        client = connect(settings)
        client.set("hello", "world")
        assert Redis.from_url(url).get("hello") == b"world"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        with pytest.raises(QueueUnavailable, match="already running"):
            EmbeddedServer(settings.redis_dir).start()
    finally:
        server.stop()
    assert not (settings.redis_dir / "server.url").exists()
    with pytest.raises(QueueUnavailable, match="MOCHI_REDIS_URL"):
        connect(settings)


def test_data_survives_a_killed_server(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path)
    Redis.from_url(server.start()).set("job:1", "accepted")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    (tmp_path / "server.url").unlink()
    restarted = EmbeddedServer(tmp_path)
    try:
        assert Redis.from_url(restarted.start()).get("job:1") == b"accepted"
    finally:
        restarted.stop()


def test_a_deep_data_dir_falls_back_to_a_loopback_port(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedServer(deep)
    try:
        url = server.start()
        assert url.startswith("redis://127.0.0.1:")
        assert Redis.from_url(url).ping()
    finally:
        server.stop()


def test_an_unreachable_url_is_reported_clearly(tmp_path: Path) -> None:
    with pytest.raises(QueueUnavailable, match="does not answer"):
        connect(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))
