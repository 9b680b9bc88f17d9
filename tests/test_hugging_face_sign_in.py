"""Sign in with Hugging Face on a Space: Gradio's OAuth session cookie opens the same account at every door.

No hub is reachable here, so the cookie is made the way Gradio's /login/callback stores a finished
sign-in: Starlette's own SessionMiddleware, with the key Gradio derives from the Space's OAuth secret.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from mochi_app.accounts import AccountStore
from mochi_app.callers import KEY_COOKIE, Callers
from mochi_app.config import Settings
from mochi_app.guests import GUEST_COOKIE
from tests.harness import SMALL, guest_cookie, start_web

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

SECRET = "space-oauth-secret"
ON_A_SPACE = {"space_id": "studio/mochi", "oauth_client_secret": SECRET}


def signed_in_cookie(username: str, secret: str = SECRET, expires_in_s: float = 3600) -> str:
    """The `session` cookie Gradio's OAuth callback leaves after `username` signs in (gradio/oauth.py)."""
    oauth_info = {"userinfo": {"preferred_username": username}, "expires_at": time.time() + expires_in_s}

    def callback(request: Request) -> Response:
        request.session["oauth_info"] = oauth_info
        return Response()

    gradio_key = hashlib.sha256(f"{secret}-v4".encode()).hexdigest()
    app = Starlette(
        routes=[Route("/login/callback", callback)],
        middleware=[Middleware(SessionMiddleware, secret_key=gradio_key, same_site="none", https_only=True)],
    )
    with TestClient(app, base_url="https://space.hf.space") as client:
        return client.get("/login/callback").cookies["session"]


@pytest.fixture
def accounts(redis: Redis) -> AccountStore:
    return AccountStore(redis)


def test_a_hugging_face_sign_in_is_its_own_account(accounts: AccountStore, tmp_path: Path) -> None:
    space = Callers(accounts, Settings(data_dir=tmp_path, host="0.0.0.0", **ON_A_SPACE))  # type: ignore[arg-type]
    assert space.account_for({"cookie": f"session={signed_in_cookie('alice')}"}) == "hf-alice"
    # It comes before the guest token the same browser also carries.
    assert space.guest_tokens is not None
    token = space.guest_tokens.mint()
    both = f"{GUEST_COOKIE}={token}; session={signed_in_cookie('alice')}"
    assert space.account_for({"cookie": both}) == "hf-alice"
    # Forged with another secret, tampered with or expired: the browser is only its guest.
    for cookie in (signed_in_cookie("alice", secret="guessed"), signed_in_cookie("alice")[:-2] + "xx",
                   signed_in_cookie("alice", expires_in_s=-1), "not-a-cookie"):  # fmt: skip
        assert space.account_for({"cookie": f"{GUEST_COOKIE}={token}; session={cookie}"}) == space.guest_tokens.account(
            token
        )


def test_an_api_key_still_wins_and_names_cannot_claim_a_hugging_face_account(
    accounts: AccountStore, tmp_path: Path
) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    _, key = accounts.create(name)
    space = Callers(accounts, Settings(data_dir=tmp_path, host="0.0.0.0", **ON_A_SPACE))  # type: ignore[arg-type]
    assert space.account_for({"cookie": f"{KEY_COOKIE}={key}; session={signed_in_cookie('alice')}"}) == name
    with pytest.raises(ValueError, match="not starting with 'guest-' or 'hf-'"):
        accounts.create("hf-alice")


def test_off_a_space_the_cookie_means_nothing(accounts: AccountStore, tmp_path: Path) -> None:
    off_a_space = {"data_dir": tmp_path, "host": "0.0.0.0"}
    for settings in (Settings(**off_a_space), Settings(**off_a_space, oauth_client_secret=SECRET)):  # type: ignore[arg-type]
        callers = Callers(accounts, settings)
        assert callers.hugging_face is None
        assert callers.signed_in_as({"cookie": f"session={signed_in_cookie('alice')}"}) is None


@pytest.fixture(scope="module")
def space(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve` as a Space runs it: public address, SPACE_ID and the OAuth variables Hugging Face sets."""
    log = tmp_path_factory.mktemp("space") / "web.log"
    settings = replace(module_settings, host="0.0.0.0", guests="on")
    oauth = {"SYSTEM": "spaces", "SPACE_ID": "studio/mochi", "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": SECRET,
             "OPENID_PROVIDER_URL": "https://huggingface.co", "OAUTH_SCOPES": "openid profile"}  # fmt: skip
    web, url = start_web(settings, log, MOCHI_HOST="0.0.0.0", **oauth)
    yield url
    web.stop()


def test_the_space_page_offers_sign_in_with_hugging_face(space: str) -> None:
    config = httpx.get(f"{space}/config").json()
    buttons = [c["props"].get("value") for c in config["components"] if c["type"] in {"button", "loginbutton"}]
    assert "Sign in with Hugging Face" in buttons
    # Gradio's own OAuth routes answer on the page's paths (signing in itself needs the hub).
    assert httpx.get(f"{space}/logout", follow_redirects=False).status_code in {302, 307}


def test_rest_and_downloads_see_the_hugging_face_account(space: str, tmp_path: Path) -> None:
    alice = {"session": signed_in_cookie("alice")}
    assert httpx.get(f"{space}/session", cookies=alice).json()["account"] == "hf-alice"
    job: dict[str, Any] = httpx.post(f"{space}/generate", json={"prompt": "a boat", **SMALL}, cookies=alice).json()
    assert httpx.get(f"{space}/status/{job['job_id']}", cookies=alice).status_code == 200
    listed = httpx.get(f"{space}/jobs/hf-alice", cookies=alice).json()["jobs"]
    assert [item["job_id"] for item in listed] == [job["job_id"]]
    # Bob, and a guest, see no such job.
    bob = {"session": signed_in_cookie("bob")}
    assert httpx.get(f"{space}/status/{job['job_id']}", cookies=bob).status_code == 404
    guest = {GUEST_COOKIE: guest_cookie(space)}
    assert httpx.get(f"{space}/status/{job['job_id']}", cookies=guest).status_code == 404
