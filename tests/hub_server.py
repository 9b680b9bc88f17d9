"""Serve a local folder as one public Hugging Face Hub model repo on loopback, so downloads run in CI without internet.

Point `HF_ENDPOINT` at `HubServer.endpoint` before huggingface_hub is imported (it reads the variable at import) and
its real download code (`snapshot_download`, `hf_hub_download`, `model_info`, `repo_info`, `list_repo_tree`, and
diffusers' `DiffusionPipeline.download` on top of them) talks to this server as it would to huggingface.co:

- `GET /api/models/{repo_id}` and `/api/models/{repo_id}/revision/{revision}`: the model info JSON (`sha`,
  `siblings`, ...; `?blobs=true` adds each file's size, blob id and LFS info; `?expand=...` keeps those properties).
- `GET /api/models/{repo_id}/tree/{revision}[/{path}]`: the tree listing (`?recursive=true`, `?expand=true`), paged
  with a `Link: <...>; rel="next"` header as on the Hub.
- `HEAD`/`GET /{repo_id}/resolve/{revision}/{path}`: a regular (git) file answers 200 with its git blob sha1 as
  `ETag`; an LFS file answers 302 to a second loopback origin standing in for the CDN, with `X-Linked-Etag` (its
  sha256), `X-Linked-Size` and `X-Repo-Commit`. File bodies honour `Range` (206, `Content-Range`; 416 past the end).
- `GET /api/agent-harnesses`: an empty registry (huggingface_hub asks for it to build its user agent).
- Unknown repo, revision or file: 404 with `X-Error-Code: RepoNotFound` / `RevisionNotFound` / `EntryNotFound`
  (the last one with `X-Repo-Commit`, so the client caches the miss under `.no_exist/`), as the Hub sends them.

LFS files are those the folder's `.gitattributes` marks `filter=lfs` (and any over 10 MB), as on the Hub; a folder
without `.gitattributes` gets weight files (`.safetensors`, `.model`, ...) and files over 4 KB in LFS.

No `X-Xet-Hash` header, `xet-auth` link or `xetHash` tree field is ever sent, so huggingface_hub takes its plain HTTP
path (`http_get`) even with hf_xet installed. The revision may be `main` or the commit.

`python -m tests.hub_server FOLDER [--repo-id ID] [--commit SHA] [--bytes-per-s N]` serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_REPO_ID = "genmo/mochi-1-preview"
DEFAULT_COMMIT = "4f0c2a1e9b7d3c5a8e6f1b2d4c6a8e0f1a3b5c7d"  # a fixed, made-up commit sha
# Which files are LFS files: those the folder's `.gitattributes` marks `filter=lfs`, as on the Hub, and any over
# 10 MB (the Hub refuses bigger plain git files). Without a `.gitattributes`: weight files, and files over a few KB.
LFS_FORCED_SIZE = 10 * 1024 * 1024
LFS_MIN_SIZE = 4 * 1024
LFS_SUFFIXES = frozenset(
    {".safetensors", ".model", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5", ".gguf", ".pb", ".tflite"}
)
SKIPPED_FOLDERS = frozenset({".git", ".cache"})  # git internals; `.cache/huggingface` of a `local_dir` download
TREE_PAGE_SIZE = 1000  # the Hub's page sizes for /tree: 1000 entries, 50 with expand=true
TREE_EXPAND_PAGE_SIZE = 50
LAST_MODIFIED = "2024-10-22T12:00:00.000Z"
CONNECTION_TIMEOUT_S = 30.0  # an idle keep-alive connection is dropped after this
STOP_JOIN_TIMEOUT_S = 5.0
MAX_REQUEST_BODY = 1024 * 1024

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_API_TREE_RE = re.compile(rf"/api/(?P<type>models|datasets|spaces)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
_API_INFO_RE = re.compile(rf"/api/(?P<type>models|datasets|spaces)/{_REPO}(?:/revision/(?P<rev>[^/]+))?")
_RESOLVE_RE = re.compile(rf"/(?:(?P<type>datasets|spaces|kernels)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
_CDN_RE = re.compile(r"/lfs/(?P<sha256>[0-9a-f]{64})/(?P<path>.+)")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class HubFile:
    """One file of the served repo, with the hashes the Hub reports for it."""

    path: str  # relative to the repo root, "/"-separated
    source: Path
    size: int
    blob_id: str  # git blob sha1: of the content for a regular file, of the LFS pointer for an LFS file
    sha256: str | None  # the content's sha256 for an LFS file, None for a regular one
    pointer_size: int | None

    @property
    def is_lfs(self) -> bool:
        """Whether the Hub would store this file in LFS."""
        return self.sha256 is not None

    @property
    def etag(self) -> str:
        """The ETag the Hub's resolve endpoint gives this file: sha256 for LFS, git blob sha1 otherwise."""
        return self.sha256 or self.blob_id


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _hash_file(path: Path, size: int) -> tuple[str, str]:
    """The git blob sha1 and the sha256 of a file's content, read once."""
    sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            sha1.update(block)
            sha256.update(block)
    return sha1.hexdigest(), sha256.hexdigest()


def _lfs_patterns(folder: Path) -> list[str] | None:
    """The patterns `.gitattributes` stores in LFS (`filter=lfs`); None when the folder has no `.gitattributes`."""
    attributes = folder / ".gitattributes"
    if not attributes.is_file():
        return None
    lines = (line.split() for line in attributes.read_text(errors="replace").splitlines())
    return [words[0] for words in lines if len(words) > 1 and not words[0].startswith("#") and "filter=lfs" in words]


def _is_lfs(path: str, size: int, patterns: list[str] | None) -> bool:
    if patterns is None:
        return size > LFS_MIN_SIZE or PurePosixPath(path).suffix in LFS_SUFFIXES
    name = path.rsplit("/", 1)[-1]
    # A pattern without a slash matches the file name at any depth; one with a slash, the path from the root.
    matches = (fnmatchcase(path, p.lstrip("/")) if "/" in p else fnmatchcase(name, p) for p in patterns)
    return size > LFS_FORCED_SIZE or any(matches)


def scan_repo(folder: Path) -> dict[str, HubFile]:
    """Every file under `folder` (symlinks followed, `.git` and `.cache` skipped), keyed by repo path, sorted."""
    patterns = _lfs_patterns(folder)
    files: dict[str, HubFile] = {}
    for source in sorted(folder.rglob("*")):
        relative = source.relative_to(folder)
        if any(part in SKIPPED_FOLDERS for part in relative.parts) or not source.is_file():
            continue
        size = source.stat().st_size
        sha1, sha256 = _hash_file(source, size)
        if _is_lfs(relative.as_posix(), size, patterns):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
            files[relative.as_posix()] = HubFile(
                relative.as_posix(), source, size, _git_blob_sha1(pointer), sha256, len(pointer)
            )
        else:
            files[relative.as_posix()] = HubFile(relative.as_posix(), source, size, sha1, None, None)
    return files


class _RangeNotSatisfiable(Exception):
    pass


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span a `Range` header asks for; None to send the whole file (no, bad or multi range)."""
    if header is None or "," in header or (match := _RANGE_RE.fullmatch(header.strip())) is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _RangeNotSatisfiable
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise _RangeNotSatisfiable
    if start > end:
        return None  # syntactically invalid (last < first): ignored, as RFC 9110 says
    return start, end


def _truthy(params: Mapping[str, list[str]], name: str) -> bool:
    return any(value.lower() in ("1", "true") for value in params.get(name, []))


class _HTTPServer(ThreadingHTTPServer):
    """One listening origin: `hub` (the API and resolve URLs) or `cdn` (where LFS files are redirected)."""

    daemon_threads = True
    block_on_close = False  # HubServer.stop() closes the connections and joins their threads itself
    allow_reuse_address = False

    def __init__(self, hub: HubServer, role: Literal["hub", "cdn"]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role = role


class HubServer:
    """A running stand-in hub: `endpoint` for HF_ENDPOINT, `commit`, and what clients asked of it.

    `requests` lists `(method, path)` of every request to either origin, in arrival order, path percent-decoded and
    without its query; LFS bodies show as `/lfs/{sha256}/{repo path}` on the CDN origin. `downloads` lists the repo
    paths whose bytes a GET started sending (a resumed download shows twice). Both only grow while the server runs;
    `clear_log()` empties them.
    """

    def __init__(
        self,
        repo_folder: Path,
        repo_id: str = DEFAULT_REPO_ID,
        commit: str = DEFAULT_COMMIT,
        bytes_per_s: int | None = None,
    ) -> None:
        if not _COMMIT_RE.fullmatch(commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError(f"bytes_per_s must be positive or None, got {bytes_per_s}")
        if not repo_folder.is_dir():
            raise FileNotFoundError(f"no repo folder at {repo_folder}")
        self.repo_folder = repo_folder
        self.repo_id = repo_id
        self.commit = commit
        self.bytes_per_s = bytes_per_s
        self.files: dict[str, HubFile] = scan_repo(repo_folder)
        self.requests: list[tuple[str, str]] = []
        self.downloads: list[str] = []
        self._log_lock = threading.Lock()
        self._pace_lock = threading.Lock()
        self._next_send = 0.0
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._hub = _HTTPServer(self, "hub")
        self._cdn = _HTTPServer(self, "cdn")
        self.endpoint = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name=name)
            for server, name in ((self._hub, "hub-server"), (self._cdn, "hub-server-cdn"))
        ]

    def start(self) -> None:
        """Start serving both origins, each from a daemon thread."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving: abort bodies in flight, close every connection, join the threads (bounded)."""
        self._stopping.set()
        for server, thread in zip((self._hub, self._cdn), self._threads, strict=True):
            if thread.is_alive():
                server.shutdown()
            server.server_close()
        with self._connections_lock:
            connections = dict(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_JOIN_TIMEOUT_S
        for thread in [*self._threads, *connections.values()]:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))

    def clear_log(self) -> None:
        """Forget the requests and downloads recorded so far."""
        with self._log_lock:
            self.requests.clear()
            self.downloads.clear()

    def fetched(self) -> list[str]:
        """The repo paths downloaded so far, each once, in first-download order."""
        with self._log_lock:
            return list(dict.fromkeys(self.downloads))

    def _record(self, method: str, path: str) -> None:
        with self._log_lock:
            self.requests.append((method, path))

    def _record_download(self, path: str) -> None:
        with self._log_lock:
            self.downloads.append(path)

    def _register(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections[connection] = threading.current_thread()
        if self._stopping.is_set():  # accepted just as stop() took its snapshot of the connections
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _unregister(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(connection, None)

    def _chunk_size(self) -> int:
        if self.bytes_per_s is None:
            return 1024 * 1024
        return max(1024, min(1024 * 1024, self.bytes_per_s // 20))  # ~20 writes a second when throttled

    def _pace(self, size: int) -> bool:
        """Wait until `size` more body bytes fit the rate, shared by all connections; False once stopping."""
        if self.bytes_per_s is not None:
            with self._pace_lock:
                start = max(time.monotonic(), self._next_send)
                self._next_send = start + size / self.bytes_per_s
                due = self._next_send
            self._stopping.wait(max(due - time.monotonic(), 0.0))
        return not self._stopping.is_set()

    def model_info(self, params: Mapping[str, list[str]]) -> dict[str, Any]:
        """The JSON of GET /api/models/{repo_id}[/revision/{rev}], as the Hub shapes it."""
        siblings: list[dict[str, Any]] = []
        for file in self.files.values():
            sibling: dict[str, Any] = {"rfilename": file.path}
            if _truthy(params, "blobs"):
                sibling |= {"blobId": file.blob_id, "size": file.size}
                if file.sha256 is not None:
                    sibling["lfs"] = {"sha256": file.sha256, "size": file.size, "pointerSize": file.pointer_size}
            siblings.append(sibling)
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(self.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": author,
            "sha": self.commit,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(file.size for file in self.files.values()),
        }
        if "model_index.json" in self.files:
            with suppress(ValueError, OSError):
                class_name = json.loads(self.files["model_index.json"].source.read_text()).get("_class_name")
                info |= {
                    "library_name": "diffusers",
                    "tags": ["diffusers", "safetensors", f"diffusers:{class_name}"],
                    "config": {"diffusers": {"_class_name": class_name}},
                }
        if _truthy(params, "securityStatus"):
            info["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
        expand = [prop for value in params.get("expand", []) + params.get("expand[]", []) for prop in value.split(",")]
        if expand:
            info = {key: value for key, value in info.items() if key in ("_id", "id", *expand)}
        return info

    def tree(self, folder: str, recursive: bool, expand: bool) -> list[dict[str, Any]] | None:
        """The entries of GET /api/models/{repo_id}/tree/{rev}/{folder}; None when there is no such folder."""
        prefix = f"{folder}/" if folder else ""
        folders: dict[str, list[str]] = {}  # folder path -> the blob ids beneath it, to derive a stable tree id
        for file in self.files.values():
            parts = file.path.split("/")
            for depth in range(1, len(parts)):
                folders.setdefault("/".join(parts[:depth]), []).append(f"{file.path} {file.blob_id}")
        if folder and folder not in folders:
            return None
        last_commit = {"id": self.commit, "title": "Upload folder using huggingface_hub", "date": LAST_MODIFIED}
        entries: list[dict[str, Any]] = []
        for path in sorted([*folders, *self.files]):
            if not path.startswith(prefix) or (not recursive and "/" in path[len(prefix) :]):
                continue
            if path in folders:
                oid = hashlib.sha1("\n".join(sorted(folders[path])).encode(), usedforsecurity=False).hexdigest()
                entry: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
            else:
                file = self.files[path]
                entry = {"type": "file", "oid": file.blob_id, "size": file.size, "path": path}
                if file.sha256 is not None:
                    entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": file.pointer_size}
                if expand:
                    entry["securityFileStatus"] = {
                        "status": "safe",
                        "avScan": {"virusFound": False, "virusNames": None},
                        "pickleImportScan": None,
                    }
            if expand:
                entry["lastCommit"] = last_commit
            entries.append(entry)
        return entries


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every response carries a Content-Length
    timeout = CONNECTION_TIMEOUT_S
    server_version = "hub-server"

    def version_string(self) -> str:
        """The `Server` header."""
        return self.server_version

    @property
    def hub(self) -> HubServer:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.hub

    @property
    def role(self) -> str:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.role

    def setup(self) -> None:
        super().setup()
        self.hub._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.hub._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: `HubServer.requests` is the log."""

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_POST(self) -> None:
        self._refuse()

    def do_PUT(self) -> None:
        self._refuse()

    def do_PATCH(self) -> None:
        self._refuse()

    def do_DELETE(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        """A read-only hub: record the request, drain a bounded body, answer 405."""
        self.hub._record(self.command, unquote(urlsplit(self.path).path))
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_REQUEST_BODY:
            self.rfile.read(length)
        else:
            self.close_connection = length > 0
        self._send_error(405, None, f"{self.command} is not served by this read-only hub", send_body=True)

    def _dispatch(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        raw_path = url.path
        params = parse_qs(url.query)
        self.hub._record(self.command, unquote(raw_path))
        if self.role == "cdn":
            if match := _CDN_RE.fullmatch(raw_path):
                file = self.hub.files.get(unquote(match["path"]))
                if file is not None and file.sha256 == match["sha256"]:
                    self._send_file(file, send_body, cdn=True)
                    return
            self._send_error(404, None, "Not Found", send_body)
        elif raw_path == "/api/agent-harnesses":
            # Unless HF_HUB_DISABLE_TELEMETRY is set, huggingface_hub fetches this registry (once a day per HF_HOME)
            # to name the coding agent in its user agent; an empty one means no agent.
            self._send_json(200, {"standardEnvVars": [], "harnesses": {}}, send_body)
        elif match := _API_TREE_RE.fullmatch(raw_path):
            if self._check_repo(match["type"], match["repo"], match["rev"], send_body):
                self._send_tree(unquote(match["path"] or "").strip("/"), raw_path, params, send_body)
        elif match := _API_INFO_RE.fullmatch(raw_path):
            if self._check_repo(match["type"], match["repo"], match["rev"] or "main", send_body):
                self._send_json(200, self.hub.model_info(params), send_body)
        elif match := _RESOLVE_RE.fullmatch(raw_path):
            if self._check_repo(match["type"] or "models", match["repo"], match["rev"], send_body):
                self._resolve(unquote(match["path"]), send_body)
        else:
            self._send_error(404, None, "Sorry, we can't find the page you are looking for.", send_body)

    def _check_repo(self, repo_type: str, repo: str, revision: str, send_body: bool) -> bool:
        """Whether the request is for this repo at a known revision; else answer the Hub's 404 and return False."""
        if repo_type != "models" or unquote(repo) != self.hub.repo_id:
            self._send_error(404, "RepoNotFound", "Repository not found", send_body)
            return False
        if unquote(revision) not in ("main", self.hub.commit):
            self._send_error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}", send_body)
            return False
        return True

    def _resolve(self, path: str, send_body: bool) -> None:
        file = self.hub.files.get(path)
        if file is None:
            headers = {"X-Repo-Commit": self.hub.commit}
            self._send_error(404, "EntryNotFound", "Entry not found", send_body, headers)
        elif file.sha256 is not None:
            # LFS: the Hub redirects to its CDN; the metadata the client needs rides on this 302.
            location = f"{self.hub.cdn_endpoint}/lfs/{file.sha256}/{quote(file.path)}"
            body = f"Found. Redirecting to {location}".encode()
            self.send_response(302)
            self._send_headers(
                {
                    "Content-Type": "text/plain; charset=utf-8",
                    "Content-Length": str(len(body)),
                    "Location": location,
                    "X-Repo-Commit": self.hub.commit,
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(file.size),
                    "ETag": f'"{file.blob_id}"',
                    "Accept-Ranges": "bytes",
                    "Vary": "Origin, Accept",
                }
            )
            if send_body:
                self.wfile.write(body)
        else:
            self._send_file(file, send_body, cdn=False)

    def _send_file(self, file: HubFile, send_body: bool, cdn: bool) -> None:
        """Answer with the file's bytes (the whole file, or the `Range` asked for), paced to `bytes_per_s`."""
        headers = {
            "Content-Type": mimetypes.guess_type(file.path)[0] or "application/octet-stream",
            "ETag": f'"{file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(Path(file.path).name)}; "
            f'filename="{Path(file.path).name}";',
        }
        if cdn:
            headers |= {
                "Cache-Control": "public, max-age=604800, immutable",
                "Last-Modified": "Tue, 22 Oct 2024 12:00:00 GMT",
            }
        else:
            headers |= {"X-Repo-Commit": self.hub.commit, "Vary": "Origin, Accept"}
        try:
            span = _parse_range(self.headers.get("Range"), file.size)
        except _RangeNotSatisfiable:
            self.send_response(416)
            self._send_headers({**headers, "Content-Range": f"bytes */{file.size}", "Content-Length": "0"})
            return
        start, end = span if span is not None else (0, file.size - 1)
        self.send_response(206 if span is not None else 200)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        self._send_headers({**headers, "Content-Length": str(end - start + 1)})
        if send_body:
            self.hub._record_download(file.path)
            self._stream(file.source, start, end - start + 1)

    def _stream(self, source: Path, start: int, length: int) -> None:
        chunk_size = self.hub._chunk_size()
        with source.open("rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(chunk_size, length))
                if not chunk or not self.hub._pace(len(chunk)):
                    self.close_connection = True  # file shrank or server stopping: the client sees a short body
                    return
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client went away (BrokenPipe, ConnectionReset) or stop() closed the socket
                    self.close_connection = True
                    return
                length -= len(chunk)

    def _send_tree(self, folder: str, raw_path: str, params: Mapping[str, list[str]], send_body: bool) -> None:
        expand = _truthy(params, "expand")
        entries = self.hub.tree(folder, recursive=_truthy(params, "recursive"), expand=expand)
        if entries is None:
            self._send_error(404, "EntryNotFound", f"{folder} does not exist on main", send_body)
            return
        page_size = TREE_EXPAND_PAGE_SIZE if expand else TREE_PAGE_SIZE
        cursor = params.get("cursor", ["0"])[0]
        offset = int(cursor) if cursor.isdigit() else 0
        headers: dict[str, str] = {}
        if offset + page_size < len(entries):
            query = {key: values[0] for key, values in params.items() if key != "cursor"}
            next_url = f"{self.hub.endpoint}{raw_path}?{urlencode({**query, 'cursor': offset + page_size})}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(200, entries[offset : offset + page_size], send_body, headers)

    def _send_json(self, status: int, payload: Any, send_body: bool, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self._send_headers(
            {**(headers or {}), "Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(body))}
        )
        if send_body:
            self.wfile.write(body)

    def _send_error(
        self, status: int, code: str | None, message: str, send_body: bool, headers: Mapping[str, str] | None = None
    ) -> None:
        extra = {**(headers or {}), "X-Error-Message": message}
        if code is not None:
            extra["X-Error-Code"] = code
        self._send_json(status, {"error": message}, send_body, extra)

    def _send_headers(self, headers: Mapping[str, str]) -> None:
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()


@contextmanager
def serve_hub(
    repo_folder: Path, repo_id: str = DEFAULT_REPO_ID, commit: str = DEFAULT_COMMIT, bytes_per_s: int | None = None
) -> Iterator[HubServer]:
    """Serve `repo_folder` as the public model repo `repo_id` at `commit` on loopback, until the block exits.

    `bytes_per_s` caps the rate of all file bodies together (None: full speed), so a test can watch a download.
    """
    server = HubServer(repo_folder, repo_id=repo_id, commit=commit, bytes_per_s=bytes_per_s)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve a folder as a hub until Ctrl-C (or SIGTERM), printing the endpoint to use as HF_ENDPOINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.hub_server", description="Serve a folder as a Hugging Face Hub model repo on loopback."
    )
    parser.add_argument("folder", type=Path, help="the repo's files, laid out as in the repo")
    parser.add_argument("--repo-id", default=DEFAULT_REPO_ID)
    parser.add_argument("--commit", default=DEFAULT_COMMIT)
    parser.add_argument("--bytes-per-s", type=int, default=None, help="cap on file body bytes per second")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # set explicitly: a background job starts with SIGINT ignored
        signal.signal(signum, lambda signum, frame: stop.set())
    with serve_hub(args.folder, repo_id=args.repo_id, commit=args.commit, bytes_per_s=args.bytes_per_s) as hub:
        print(f"HF_ENDPOINT={hub.endpoint}", flush=True)
        print(
            f"serving {args.folder} as {hub.repo_id} at {hub.commit} ({len(hub.files)} files); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        # Short waits: the signal may land on a server thread, and Python runs handlers on the main thread only.
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
