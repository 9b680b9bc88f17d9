"""Accounts and keys on a real Valkey, and who each request acts for."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from mochi_app.accounts import LOCAL_ACCOUNT, AccountError, AccountStore
from mochi_app.callers import KEY_COOKIE, Callers, NobodyCanSignIn, NotSignedIn, is_loopback
from mochi_app.config import Settings
from mochi_app.guests import GUEST_COOKIE, GuestTokens
from tests.harness import Children


def fresh_name() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def accounts(redis: Redis) -> AccountStore:
    return AccountStore(redis)


def callers(accounts: AccountStore, data_dir: Path, host: str = "0.0.0.0", guests: str = "auto") -> Callers:
    return Callers(accounts, replace(Settings(), data_dir=data_dir, host=host, guests=guests))  # type: ignore[arg-type]


def tokens(callers: Callers) -> GuestTokens:
    assert callers.guest_tokens is not None
    return callers.guest_tokens


def test_a_key_is_shown_once_and_opens_only_its_account(accounts: AccountStore) -> None:
    name = fresh_name()
    account, key = accounts.create(name)
    assert key.startswith("mochi_") and len(key) > 40
    assert accounts.by_key(key) == account
    assert accounts.by_key(key + "x") is None and accounts.by_key("") is None
    assert name in [listed.name for listed in accounts.list()]
    with pytest.raises(AccountError, match="exists already"):
        accounts.create(name)


def test_revoking_stops_the_key_at_once(accounts: AccountStore) -> None:
    name = fresh_name()
    _, key = accounts.create(name)
    assert accounts.revoke(name).revoked_at is not None
    assert accounts.by_key(key) is None
    with pytest.raises(AccountError, match="no account named 'nobody-here'"):
        accounts.revoke("nobody-here")


@pytest.mark.parametrize("name", ["", "Alice", "a b", "x" * 41, "local", "../etc", "é"])
def test_account_names_are_plain(accounts: AccountStore, name: str) -> None:
    with pytest.raises(AccountError, match="account names are 1-40 lowercase letters"):
        accounts.create(name)


def test_no_key_is_stored_in_plaintext(accounts: AccountStore, redis: Redis, redis_url: str, data_dir: Path) -> None:
    keys = [accounts.create(fresh_name())[1] for _ in range(3)]
    stored = b""
    for redis_key in redis.scan_iter(count=1000):
        kind = redis.type(redis_key)
        if kind == b"string":
            stored += redis_key + (redis.get(redis_key) or b"")
        elif kind == b"hash":
            stored += redis_key + b"".join(k + v for k, v in redis.hgetall(redis_key).items())
    # The append-only file holds every write the server ever took.
    stored += b"".join(path.read_bytes() for path in (data_dir / "redis").rglob("*.aof"))
    assert stored, "read nothing back from the server"
    for key in keys:
        assert key.encode() not in stored
        assert key.removeprefix("mochi_").encode() not in stored


def test_who_a_request_acts_for(accounts: AccountStore, tmp_path: Path) -> None:
    name = fresh_name()
    _, key = accounts.create(name)
    public = callers(accounts, tmp_path)
    assert public.account_for({"authorization": f"Bearer {key}"}) == name
    assert public.account_for({"cookie": f"{KEY_COOKIE}={key}"}) == name
    token = tokens(public).mint()
    guest = public.account_for({"cookie": f"{GUEST_COOKIE}={token}"})
    assert guest.startswith("guest-") and guest != public.account_for(
        {"cookie": f"{GUEST_COOKIE}={tokens(public).mint()}"}
    )
    with pytest.raises(NotSignedIn, match="that API key is not valid"):
        public.account_for({"authorization": "Bearer mochi_wrong"})
    with pytest.raises(NotSignedIn, match="that API key is not valid"):
        public.account_for({"authorization": f"Basic {key}"})
    with pytest.raises(NotSignedIn, match="sign in"):
        public.account_for({})
    with pytest.raises(NotSignedIn):
        public.account_for({"cookie": f"{GUEST_COOKIE}=short"})


def test_loopback_without_a_key_is_the_local_owner(accounts: AccountStore, tmp_path: Path) -> None:
    laptop = callers(accounts, tmp_path, host="127.0.0.1")
    assert laptop.account_for({}) == LOCAL_ACCOUNT
    assert not laptop.guests
    with_guests = callers(accounts, tmp_path, host="127.0.0.1", guests="on")
    token = tokens(with_guests).mint()
    assert laptop.account_for({"cookie": f"{GUEST_COOKIE}={token}"}) == LOCAL_ACCOUNT
    assert with_guests.account_for({"cookie": f"{GUEST_COOKIE}={token}"}) == tokens(with_guests).account(token)
    assert [is_loopback(host) for host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "example.com")] == [
        True, True, True, False, False,
    ]  # fmt: skip


def test_a_public_address_nobody_could_use_is_refused(tmp_path: Path, children: Children) -> None:
    empty = AccountStore(Redis.from_url(children.queue_server(tmp_path / "redis")))  # no accounts at all
    with pytest.raises(NobodyCanSignIn, match=r"refusing to listen on 0\.0\.0\.0: guest accounts are off"):
        callers(empty, tmp_path, guests="off").ensure_someone_can_sign_in()
    callers(empty, tmp_path, guests="auto").ensure_someone_can_sign_in()
    callers(empty, tmp_path, host="127.0.0.1", guests="off").ensure_someone_can_sign_in()
    empty.create(fresh_name())
    callers(empty, tmp_path, guests="off").ensure_someone_can_sign_in()
