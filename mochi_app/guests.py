"""Guest accounts: tokens signed with the server's secret, and how many new ones one address may get."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path

from redis import Redis

from mochi_app.config import SettingsError
from mochi_app.rate_limits import wait_s

GUEST_COOKIE = "mochi_guest"
GUEST_PREFIX = "guest-"
GUEST_SECRET_FILE = "guest-secret"
# A token is a random nonce and its signature, 32 URL-safe characters each: only this server can make one.
GUEST_TOKEN = re.compile(r"([A-Za-z0-9_-]{32})\.([A-Za-z0-9_-]{32})")
SECRET_BYTES = 32
NONCE_BYTES = SIGNATURE_BYTES = 24  # 32 characters in URL-safe base64, with no padding
NEW_GUEST_WINDOW_S = 3600
IPV6_NETWORK_BITS = 64  # one subscriber's IPv6 addresses share a /64: counting each would not bind


class BadGuestSecret(SettingsError):
    """The data folder's guest secret is not one this studio wrote."""


def load_secret(path: Path) -> bytes:
    """The server's secret, made on first use (256 random bits, readable by the owner only).

    Every process with this data folder signs with it; a second process starting at the same moment
    reads the first one's (the file appears whole, by a hard link, or not at all).
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(SECRET_BYTES))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise BadGuestSecret(
            f"{path} does not hold a guest secret (64 hex digits); delete it to make a new one "
            "(every guest then starts over with a new, empty account)"
        )
    return secret


class GuestTokens:
    """Makes and checks guest tokens; a guest's account id is derived from its token, which is never stored."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def mint(self) -> str:
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        return f"{nonce}.{self._signature(nonce)}"

    def account(self, token: str) -> str | None:
        """`guest-…` for a token this server signed; None for any other (forged, invented, another server's)."""
        match = GUEST_TOKEN.fullmatch(token)
        if match is None or not hmac.compare_digest(match[2], self._signature(match[1])):
            return None
        return GUEST_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:32]

    def _signature(self, nonce: str) -> str:
        digest = hmac.new(self.secret, nonce.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(digest).decode()


def address_group(host: str) -> str:
    """The unit a per-address limit counts: an IPv4 address, an IPv6 /64, or the name as given."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_NETWORK_BITS), strict=False))
    return str(address)


def new_guests_key(group: str, window: int) -> str:
    return f"new-guests:{group}:{window}"


class NewGuestLimit:
    """At most `per_hour` new guest accounts for one address in each hour (a fixed window)."""

    def __init__(self, redis: Redis, per_hour: int) -> None:
        self.redis = redis
        self.per_hour = per_hour

    def wait_s(self, host: str) -> int:
        """Counts one more new guest for `host`; 0 when it is within the limit, else seconds until it is."""
        group = address_group(host)
        return wait_s(self.redis, lambda window: new_guests_key(group, window), NEW_GUEST_WINDOW_S, self.per_hour)
