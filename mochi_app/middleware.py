"""ASGI middleware for the web process: guest tokens, body size, cross-site writes, Gradio's routes we do not offer."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mochi_app.callers import cookies
from mochi_app.errors import CrossSiteWrite, NotOffered, RequestTooLarge, refusal
from mochi_app.guests import GUEST_COOKIE, GuestTokens, NewGuestLimit
from mochi_app.queue import TooBusy

GUEST_COOKIE_MAX_AGE_S = 365 * 24 * 3600
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_https(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return scope.get("scheme") == "https" or headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"


def cookie_header(name: str, value: str, scope: Scope, max_age_s: int, embedded: bool) -> tuple[bytes, bytes]:
    """A Set-Cookie header the page's scripts cannot read.

    Lax wherever the page is its own top-level site: no other site's page can make the browser send it
    with a POST. Embedded (a Space, in huggingface.co's iframe) it must cross sites, so None over HTTPS,
    Partitioned: kept apart per embedding site, so a page elsewhere that frames or calls the studio
    finds none of the visitor's cookies.
    """
    same_site = "None; Secure; Partitioned" if embedded and is_https(scope) else "Lax"
    cookie = f"{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite={same_site}"
    return b"set-cookie", cookie.encode("latin-1")


class GuestCookie:
    """Gives a browser that opens the page without a valid guest token a new, signed one, as many in an
    hour as `limit` allows its address; past that, the page load gets 429."""

    def __init__(self, app: ASGIApp, tokens: GuestTokens, limit: NewGuestLimit, embedded: bool) -> None:
        self.app = app
        self.tokens = tokens
        self.limit = limit
        self.embedded = embedded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_page_load(scope) or self._has_valid_token(scope):
            await self.app(scope, receive, send)
            return
        if wait_s := await run_in_threadpool(self._wait_s, scope):
            detail = f"too many new guests from your address this hour; try again in {wait_s} s, or sign in"
            await send_refusal(send, TooBusy(detail, wait_s))
            return
        token = self.tokens.mint()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    cookie_header(GUEST_COOKIE, token, scope, GUEST_COOKIE_MAX_AGE_S, self.embedded),
                ]
            await send(message)

        # The page's own requests that follow carry the cookie; so does this one, for the handlers. Put last,
        # it wins over an invalid one the browser sent (the parser keeps a name's last value).
        sent = Headers(scope=scope).get("cookie")
        cookie = f"{sent}; {GUEST_COOKIE}={token}" if sent else f"{GUEST_COOKIE}={token}"
        others = [(name, value) for name, value in scope["headers"] if name != b"cookie"]
        scope = dict(scope, headers=[*others, (b"cookie", cookie.encode("latin-1", errors="replace"))])
        await self.app(scope, receive, send_with_cookie)

    def _has_valid_token(self, scope: Scope) -> bool:
        token = cookies(Headers(scope=scope).get("cookie", "")).get(GUEST_COOKIE)
        return token is not None and self.tokens.account(token) is not None

    def _wait_s(self, scope: Scope) -> int:
        client = scope.get("client")
        if client is None:
            return 0
        try:
            return self.limit.wait_s(client[0])
        except RedisError:
            return 0  # the queue is down: nothing can be submitted, and the page says so


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
        await send_refusal(send, RequestTooLarge(f"the request body is {size} bytes; the limit is {self.max_bytes}"))


class SameSiteWrites:
    """Answers 403 to a request that would change something (POST, PUT, PATCH, DELETE) sent by another
    site's page: the browser says so in Sec-Fetch-Site, or, where it does not, in an Origin whose host is
    not this one. Scripts and gradio_client send neither; origins in MOCHI_CORS_ORIGINS are let through."""

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_origins = {origin.rstrip("/").lower() for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITES and self._cross_site(Headers(scope=scope)):
            await send_refusal(send, CrossSiteWrite("requests from another site's page are refused"))
            return
        await self.app(scope, receive, send)

    def _cross_site(self, headers: Headers) -> bool:
        origin = headers.get("origin", "").rstrip("/").lower()
        if origin in self.allowed_origins:
            return False
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None:
            return fetch_site == "cross-site"
        if not origin:
            return False
        hosts = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
        return origin == "null" or urlsplit(origin).netloc not in hosts


class NoUploads:
    """Answers 404 to Gradio's routes the page does not use that keep or hand out what others can read:
    uploads (Gradio would keep any file anyone posts and serve it to anyone at /gradio_api/file=) and
    deep links (a copy of any session's state, for whoever names its hash)."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.paths = {f"{prefix}/upload", f"{prefix}/upload_progress", f"{prefix}/deep_link"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in self.paths:
            await send_refusal(send, NotOffered("not offered here"))
            return
        await self.app(scope, receive, send)


async def send_refusal(send: Send, exc: Exception) -> None:
    """Answer with what errors.ERRORS says for `exc`, before any route runs."""
    answer = refusal(exc)
    assert answer is not None, f"{type(exc).__name__} has no row in errors.ERRORS"
    body = json.dumps({"detail": answer.detail}).encode()
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_page_load(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    return scope["path"] in {"/", ""} and "text/html" in Headers(scope=scope).get("accept", "")
