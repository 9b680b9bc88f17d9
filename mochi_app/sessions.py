"""Gradio's sessions, one set per caller: the session hashes a request names, renamed by who is calling."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlencode

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mochi_app.middleware import send_refusal


class SessionsPerCaller:
    """Gives each caller Gradio sessions of its own.

    Gradio keys a page's server-side state and its event stream by a session hash the browser makes up
    and sends in URLs (so it shows in proxy logs): replayed, it opened another visitor's session. Here
    every hash a request names, in its query, path or JSON body, is renamed to one derived from the hash
    and the caller's identity; the same hash from other credentials names another, empty session.
    """

    def __init__(self, app: ASGIApp, prefix: str, identify: Callable[[Mapping[str, str]], str | None]) -> None:
        self.app = app
        self.prefix = f"{prefix}/"
        self.in_path = (f"{prefix}/heartbeat/", f"{prefix}/stream/")
        self.identify = identify
        self.secret = secrets.token_bytes(32)  # Gradio's sessions live in this process only, and so does this

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        body, disconnected = (await _read_body(receive)) if scope["method"] == "POST" else (b"", False)
        if disconnected or not self._names_a_session(scope, body):
            await self.app(scope, _replay(body, disconnected, receive) if scope["method"] == "POST" else receive, send)
            return
        try:
            identity = await run_in_threadpool(self.identify, Headers(scope=scope))
        except RedisError as exc:
            await send_refusal(send, exc)
            return
        rename = self._renamer(identity)
        scope = dict(scope, query_string=self._query(scope["query_string"], rename))
        if scope["method"] == "GET" and (path := self._path(scope["path"], rename)) != scope["path"]:
            scope.update(path=path, raw_path=path.encode())
        body = self._body(body, rename)
        headers = [(name, value) for name, value in scope["headers"] if name != b"content-length"]
        scope["headers"] = [*headers, (b"content-length", str(len(body)).encode())] if body else headers
        await self.app(scope, _replay(body, False, receive), send)

    def _renamer(self, identity: str | None) -> Callable[[str], str]:
        def rename(session_hash: str) -> str:
            keyed = f"{identity or ''}\n{session_hash}".encode()
            return hmac.new(self.secret, keyed, hashlib.sha256).hexdigest()[:32]

        return rename

    def _names_a_session(self, scope: Scope, body: bytes) -> bool:
        return (
            b"session_hash" in scope["query_string"]
            or (scope["method"] == "GET" and scope["path"].startswith(self.in_path))
            or b'"session_hash"' in body
        )

    @staticmethod
    def _query(query: bytes, rename: Callable[[str], str]) -> bytes:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        renamed = [(name, rename(value) if name == "session_hash" else value) for name, value in pairs]
        return urlencode(renamed).encode("latin-1") if renamed != pairs else query

    def _path(self, path: str, rename: Callable[[str], str]) -> str:
        # GET /heartbeat/{session_hash} and /stream/{session_hash}/{run}/... (POST /stream/{event_id} names an event)
        for start in self.in_path:
            if path.startswith(start) and (rest := path[len(start) :]):
                session_hash, slash, tail = rest.partition("/")
                if start.endswith("/heartbeat/") or tail:
                    return f"{start}{rename(session_hash)}{slash}{tail}"
        return path

    @staticmethod
    def _body(body: bytes, rename: Callable[[str], str]) -> bytes:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            return body
        if not isinstance(parsed, dict) or not isinstance(parsed.get("session_hash"), str):
            return body
        return json.dumps({**parsed, "session_hash": rename(parsed["session_hash"])}).encode()


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, whole, and whether the client went away before sending all of it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive() if not disconnected else {"type": "http.disconnect"}

    return replay
