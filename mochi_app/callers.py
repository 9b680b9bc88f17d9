"""Who a request acts for: a bearer key, a signed-in browser's key, Hugging Face, a guest token, or the owner."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import time
from collections.abc import Mapping
from typing import Any

from itsdangerous import BadSignature, TimestampSigner
from starlette.requests import cookie_parser

from mochi_app.accounts import HUGGING_FACE_PREFIX, LOCAL_ACCOUNT, AccountStore
from mochi_app.config import Settings, SettingsError
from mochi_app.guests import GUEST_COOKIE, GUEST_SECRET_FILE, GuestTokens, load_secret

KEY_COOKIE = "mochi_key"
# Gradio's "Sign in with Hugging Face" keeps the user in Starlette's session cookie, signed with a
# hash of the Space's OAuth secret, for Starlette's default two weeks.
HF_SESSION_COOKIE = "session"
HF_SESSION_MAX_AGE_S = 14 * 24 * 3600
# Headers a reverse proxy adds: a request that carries one came from somewhere else, not from this machine.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")

SIGNED_OUT = "this browser's API key is no longer valid (it was revoked): sign out, then sign in with a new key"


class NotSignedIn(PermissionError):
    """The request carries no usable credentials, or a key that is not valid."""


class NobodyCanSignIn(SettingsError):
    """A public address, no guests and no accounts: nobody could use the studio."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HuggingFaceSessions:
    """Who signed in with Hugging Face, read from the session cookie Gradio's OAuth routes set.

    Gradio's own middleware decodes that cookie only inside the mounted page; reading it here lets
    REST routes and video downloads see the same account.
    """

    def __init__(self, oauth_client_secret: str) -> None:
        # The key Gradio derives (gradio/oauth.py: attach_oauth); "-v4" is its cookie format version.
        secret = hashlib.sha256(f"{oauth_client_secret}-v4".encode()).hexdigest()
        self.signer = TimestampSigner(secret)

    def account(self, cookie: str) -> str | None:
        """`hf-{username}` for a valid, unexpired sign-in; None for anything else."""
        try:
            session = json.loads(base64.b64decode(self.signer.unsign(cookie, max_age=HF_SESSION_MAX_AGE_S)))
        except (BadSignature, binascii.Error, ValueError):
            return None
        info: Any = session.get("oauth_info") if isinstance(session, dict) else None
        userinfo: Any = info.get("userinfo") if isinstance(info, dict) else None
        if not isinstance(userinfo, dict):
            return None
        expires_at = info.get("expires_at")
        if isinstance(expires_at, int | float) and expires_at < time.time():
            return None
        username = userinfo.get("preferred_username")
        return HUGGING_FACE_PREFIX + username if isinstance(username, str) and username else None


class Callers:
    """Decides which account a request acts for: the one place every door asks."""

    def __init__(self, accounts: AccountStore, settings: Settings) -> None:
        self.accounts = accounts
        self.host = settings.host
        self.loopback = is_loopback(settings.host)
        self.guests = settings.guests == "on" or (settings.guests == "auto" and not self.loopback)
        self.guest_tokens = GuestTokens(load_secret(settings.data_dir / GUEST_SECRET_FILE)) if self.guests else None
        secret = settings.oauth_client_secret if settings.hugging_face_sign_in else None
        self.hugging_face = HuggingFaceSessions(secret) if secret else None

    def account_for(self, headers: Mapping[str, str]) -> str:
        """In order: a bearer key, a signed-in browser's key, Hugging Face, a guest's token, the loopback owner."""
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, key = authorization.partition(" ")
            account = self.accounts.by_key(key.strip()) if scheme.lower() == "bearer" else None
            if account is None:
                raise NotSignedIn("that API key is not valid: it is mistyped or was revoked")
            return account.name
        jar = cookies(headers.get("cookie", ""))
        if signed_in := jar.get(KEY_COOKIE):
            # A browser signed in with a key that stopped working is told so, not quietly made someone else.
            if account := self.accounts.by_key(signed_in):
                return account.name
            raise NotSignedIn(SIGNED_OUT)
        session = jar.get(HF_SESSION_COOKIE)
        if self.hugging_face and session and (hugging_face_account := self.hugging_face.account(session)):
            return hugging_face_account
        if self.guest_tokens and (token := jar.get(GUEST_COOKIE)) and (guest := self.guest_tokens.account(token)):
            return guest
        if self.loopback and not any(name in headers for name in FORWARDING_HEADERS):
            return LOCAL_ACCOUNT
        raise NotSignedIn("sign in: send the header 'Authorization: Bearer YOUR_API_KEY'")

    def ensure_someone_can_sign_in(self) -> None:
        """Refuse a public address where no guest, no key and no local owner could use the studio."""
        if self.loopback or self.guests or self.hugging_face or self.accounts.list():
            return
        raise NobodyCanSignIn(
            f"refusing to listen on {self.host}: guest accounts are off (MOCHI_GUESTS=off) and no account "
            "exists, so nobody could sign in. Create one with `python -m mochi_app accounts create NAME`, "
            "or set MOCHI_GUESTS=on."
        )

    def signed_in_as(self, headers: Mapping[str, str]) -> str | None:
        """The account, or None when the request could not act for any."""
        try:
            return self.account_for(headers)
        except NotSignedIn:
            return None


def cookies(header: str) -> dict[str, str]:
    """The cookies of a Cookie header, as browsers send them: one odd cookie (JSON, spaces, non-ASCII)
    leaves the others readable, where `http.cookies.SimpleCookie` stops at it."""
    return cookie_parser(header)
