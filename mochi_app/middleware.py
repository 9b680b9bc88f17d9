"""ASGI middleware for the web process: a guest token for each new browser, a cap on body size, no uploads."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mochi_app.accounts import GUEST_COOKIE, GUEST_TOKEN, cookies, new_guest_token

GUEST_COOKIE_MAX_AGE_S = 365 * 24 * 3600


def is_https(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return scope.get("scheme") == "https" or headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"


def cookie_header(name: str, value: str, scope: Scope, max_age_s: int) -> tuple[bytes, bytes]:
    """A Set-Cookie header the page's scripts cannot read; cross-site (a Space's iframe) only over HTTPS."""
    same_site = "None; Secure" if is_https(scope) else "Lax"
    cookie = f"{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite={same_site}"
    return b"set-cookie", cookie.encode("latin-1")


class GuestCookie:
    """Gives a browser that opens the page without a valid guest token a new, unguessable one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_page_load(scope) or _has_valid_guest_token(scope):
            await self.app(scope, receive, send)
            return
        token = new_guest_token()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    cookie_header(GUEST_COOKIE, token, scope, GUEST_COOKIE_MAX_AGE_S),
                ]
            await send(message)

        # The page's own requests that follow carry the cookie; so does this one, for the handlers. Put last,
        # it wins over an invalid one the browser sent (the parser keeps a name's last value).
        sent = Headers(scope=scope).get("cookie")
        cookie = f"{sent}; {GUEST_COOKIE}={token}" if sent else f"{GUEST_COOKIE}={token}"
        others = [(name, value) for name, value in scope["headers"] if name != b"cookie"]
        scope = dict(scope, headers=[*others, (b"cookie", cookie.encode("latin-1", errors="replace"))])
        await self.app(scope, receive, send_with_cookie)


class BodySizeLimit:
    """Answers 413 to a request body over `max_bytes`, declared or streamed, before any route reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, declared)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, f"more than {self.max_bytes}")
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: Any) -> None:
        body = json.dumps({"detail": f"the request body is {size} bytes; the limit is {self.max_bytes}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class NoUploads:
    """Answers 404 to Gradio's upload routes: the page has no upload component, and Gradio would keep any
    file anyone posts and serve it to anyone at /gradio_api/file=."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.paths = {f"{prefix}/upload", f"{prefix}/upload_progress"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in self.paths:
            body = b'{"detail": "uploads are not accepted here"}'
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _has_valid_guest_token(scope: Scope) -> bool:
    token = cookies(Headers(scope=scope).get("cookie", "")).get(GUEST_COOKIE)
    return token is not None and GUEST_TOKEN.fullmatch(token) is not None


def _is_page_load(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    return scope["path"] in {"/", ""} and "text/html" in Headers(scope=scope).get("accept", "")
