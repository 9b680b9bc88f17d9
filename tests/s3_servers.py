"""Real S3 servers on loopback for the tests: nanio and localbucket.

`start_s3_server(kind, root)` runs one of two S3-compatible servers from PyPI as a child process on 127.0.0.1, with
`root` as its data folder (a bucket is a subfolder, an object a file under it), and returns once it answers HTTP:

- `nanio` (`python -m nanio serve`) checks SigV4 on every request (header auth with a 15-minute clock skew, presigned
  URLs and their expiry, aws-chunked signatures) against `NANIO_ACCESS_KEY`/`NANIO_SECRET_KEY`, but accepts any
  region in the signature. It ignores `If-None-Match` on PutObject (a second conditional put overwrites), the
  `response-*` overrides of a presigned GET, and the 5 MiB minimum part size; multipart ETags are `md5-N`. When it
  refuses an upload before reading its body (a 403 or NoSuchUpload), it keeps the connection open with the body
  unread, so that client's next request on it fails with 400 "Invalid HTTP request received.": after an expected
  refused upload, use a fresh `client()`.
- `localbucket` (`python -m localbucket ROOT`) checks no credentials at all (any key, secret, signature or expiry
  passes) and serves path-style URLs only. It answers DeleteObjects (`POST ?delete`) with 501 NotImplemented,
  honours `If-None-Match: *` with 412, and stores no Content-Type or `x-amz-meta-*` (it guesses the type from the
  key's extension); multipart ETags are a plain MD5 of the whole object.

Neither server can report a port it chose itself (nanio refuses port 0, localbucket logs the 0 it was given), so
the port is a free one picked here; a start that loses that port to another process is retried on a fresh one.
The server's output goes to `<kind>.log` in the data folder (both servers list only folders as buckets), and the
server runs in a process group of its own, which `S3Server.stop` ends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

KINDS = ("nanio", "localbucket")
HOST = "127.0.0.1"
REGION = "us-east-1"
# Made-up test credentials. nanio checks requests are signed with them; localbucket accepts anything.
ACCESS_KEY = "mochitestaccesskey"
SECRET_KEY = "mochi/test+secret/key0123456789abcdefghij"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3
# How each server names itself in its answers' `Server` header (uvicorn for nanio; BaseHTTPRequestHandler's
# `server_version` for localbucket).
SERVER_HEADERS = {"nanio": "uvicorn", "localbucket": "LocalBucket"}
# What boto3 needs for both servers. SigV4 must be asked for by name: without it boto3 still signs presigned URLs
# with SigV2 (`AWSAccessKeyId=...&Signature=...`), which nanio refuses (403). Path style, since localbucket serves no
# other kind (boto3's default, auto, picks it for these endpoints too). boto3's default checksums (a CRC32
# header) are fine: both servers ignore them. One attempt, so a refused request fails the test at once.
CLIENT_CONFIG = Config(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    retries={"mode": "standard", "max_attempts": 1},
    connect_timeout=10,
    read_timeout=60,
)


@dataclass(frozen=True)
class S3Server:
    """One running S3 server and what a client needs to reach it."""

    kind: str  # "nanio" | "localbucket"
    endpoint_url: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and the AWS CLI) in a child process at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A new boto3 S3 client for this server, in a session of its own (not the shared default one)."""
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=CLIENT_CONFIG,
        )

    def stop(self) -> None:
        """End the server's process group: SIGTERM, then SIGKILL if it is still there after a while."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()


def start_s3_server(kind: str, root: Path, bucket: str | None = None) -> S3Server:
    """Start a `kind` server with its data in `root`, wait until it answers, and create `bucket` if given."""
    if kind not in KINDS:
        raise ValueError(f"unknown S3 server kind {kind!r}; expected one of {KINDS}")
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        server = _launch(kind, root, port)
        try:
            _wait_until_answering(server)
        except _PortTaken:
            if attempt == PORT_ATTEMPTS:
                raise
            continue
        except BaseException:
            server.stop()
            raise
        if bucket is not None:
            try:
                server.client().create_bucket(Bucket=bucket)
            except BaseException:
                server.stop()
                raise
        return server
    raise AssertionError("unreachable")  # pragma: no cover


class _PortTaken(RuntimeError):
    """The server exited because something else took its port between our probe and its bind."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _command(kind: str, root: Path, port: int) -> list[str]:
    # -P: the working directory is not put on sys.path, so nothing in it can shadow a module the server imports.
    if kind == "nanio":
        return [
            *(sys.executable, "-P", "-m", "nanio", "serve"),
            *("--data-dir", str(root), "--host", HOST, "--port", str(port), "--region", REGION),
        ]
    return [sys.executable, "-P", "-m", "localbucket", str(root), "--host", HOST, "--port", str(port)]


def _launch(kind: str, root: Path, port: int) -> S3Server:
    # nanio reads its settings from NANIO_* variables too; drop any inherited ones (an options file would win).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANIO_")}
    env.update(NANIO_ACCESS_KEY=ACCESS_KEY, NANIO_SECRET_KEY=SECRET_KEY, PYTHONUNBUFFERED="1")
    log_path = root / f"{kind}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            _command(kind, root, port),
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return S3Server(
        kind=kind,
        endpoint_url=f"http://{HOST}:{port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        process=process,
        log_path=log_path,
    )


def _wait_until_answering(server: S3Server) -> None:
    """Poll with a real HTTP request until the server answers; raise with its log if it exits first.

    Any status will do (nanio answers an unsigned `GET /` with 403), but the answer must carry the server's own
    `Server` header and come while our process is alive: whatever else took the port must not pass for it.
    """
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        banner = _server_header(port)
        if server.process.poll() is not None:
            log = server.log
            message = f"{server.kind} exited with {server.process.returncode} before answering:\n{log}"
            if "address already in use" in log.lower():
                raise _PortTaken(message)
            raise RuntimeError(message)
        if SERVER_HEADERS[server.kind] in banner:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{server.kind} did not answer on {server.endpoint_url} in {START_TIMEOUT_S} s:\n{server.log}"
            )
        time.sleep(0.05)


def _server_header(port: int) -> str:
    """The `Server` header of the answer to `GET /` on the port, or "" if nothing answers HTTP there yet."""
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        return response.getheader("Server") or ""
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        connection.close()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(process.pid, signum)
