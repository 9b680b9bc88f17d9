"""Named accounts and their API keys, stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from pydantic import BaseModel
from redis import Redis

from mochi_app.guests import GUEST_PREFIX

ACCOUNTS_KEY = "accounts"  # hash: account name -> Account JSON
KEY_PREFIX = "mochi_"
# With no key, on a loopback address, requests act for the machine's owner (the laptop demo).
LOCAL_ACCOUNT = "local"
ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
HUGGING_FACE_PREFIX = "hf-"
RESERVED_NAMES = frozenset({LOCAL_ACCOUNT})
RESERVED_PREFIXES = (GUEST_PREFIX, HUGGING_FACE_PREFIX)  # ids made from other credentials: no key may claim one
FREE_ACCOUNT_PREFIXES = RESERVED_PREFIXES  # accounts anyone can make for themselves, as many as they like


class AccountError(ValueError):
    """An accounts command cannot be done as asked."""


class Account(BaseModel):
    """A named account that signs in with an API key; only the key's SHA-256 is kept."""

    name: str
    key_sha256: str
    created_at: float
    revoked_at: float | None = None


def key_digest(key: str) -> str:
    # API keys are 256 random bits, so a plain SHA-256 cannot be reversed by guessing: no slow hash needed.
    return hashlib.sha256(key.encode()).hexdigest()


def apikey_key(digest: str) -> str:
    return f"apikey:{digest}"


class AccountStore:
    """Named accounts in Redis: create (the key is shown once), list, revoke, and look up by key."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def create(self, name: str) -> tuple[Account, str]:
        """A new account and its API key; the key is not kept and cannot be shown again."""
        if not ACCOUNT_NAME.fullmatch(name) or name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            raise AccountError(
                f"account names are 1-40 lowercase letters, digits, '-' or '_' (not {LOCAL_ACCOUNT!r}, and not "
                f"starting with {' or '.join(map(repr, RESERVED_PREFIXES))}), got {name!r}"
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        account = Account(name=name, key_sha256=key_digest(key), created_at=time.time())
        if not self.redis.hsetnx(ACCOUNTS_KEY, name, account.model_dump_json()):
            raise AccountError(f"an account named {name!r} exists already")
        self.redis.set(apikey_key(account.key_sha256), name)
        return account, key

    def put_back(self, account: Account) -> None:
        """An account as a snapshot kept it: its key works again unless it was revoked."""
        with self.redis.pipeline() as pipe:
            pipe.hset(ACCOUNTS_KEY, account.name, account.model_dump_json())
            if account.revoked_at is None:
                pipe.set(apikey_key(account.key_sha256), account.name)
            pipe.execute()

    def list(self) -> list[Account]:
        raws = self.redis.hvals(ACCOUNTS_KEY)
        return sorted((Account.model_validate_json(raw) for raw in raws), key=lambda account: account.created_at)

    def get(self, name: str) -> Account | None:
        raw = self.redis.hget(ACCOUNTS_KEY, name)
        return None if raw is None else Account.model_validate_json(raw)

    def revoke(self, name: str) -> Account:
        """The account's key stops working at once; its jobs stay."""
        account = self.get(name)
        if account is None:
            raise AccountError(f"no account named {name!r}")
        if account.revoked_at is None:
            account = account.model_copy(update={"revoked_at": time.time()})
            with self.redis.pipeline() as pipe:
                pipe.hset(ACCOUNTS_KEY, name, account.model_dump_json())
                pipe.delete(apikey_key(account.key_sha256))
                pipe.execute()
        return account

    def by_key(self, key: str) -> Account | None:
        """The live account this key belongs to, or None."""
        digest = key_digest(key)
        name = self.redis.get(apikey_key(digest))
        account = None if name is None else self.get(name.decode() if isinstance(name, bytes) else str(name))
        if account is None or account.revoked_at is not None:
            return None
        return account if hmac.compare_digest(account.key_sha256, digest) else None
