"""Attacks from outside, each class with its variants: hostile Host headers, proxies, odd cookies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.accounts import GUEST_COOKIE, KEY_COOKIE, LOCAL_ACCOUNT, AccountStore, guest_account, new_guest_token
from mochi_app.config import Settings
from mochi_app.web import create_app

REBINDING_HOSTS = [
    "rebind.attacker.test",
    "rebind.attacker.test:7860",
    "127.0.0.1.attacker.test",
    "localhost.attacker.test",
    "attacker.test#@127.0.0.1",
    "",
]


@pytest.fixture
def laptop(settings: Settings) -> Iterator[TestClient]:
    """The web on a loopback bind, as `python app.py` runs it."""
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        yield http


@pytest.mark.parametrize("host", REBINDING_HOSTS)
def test_a_rebinding_host_reaches_nothing_on_a_loopback_bind(laptop: TestClient, host: str) -> None:
    for path in ("/", "/healthz", "/jobs/local", "/session", "/gradio_api/info", "/download/x"):
        response = laptop.get(path, headers={"host": host})
        assert response.status_code == 400, (path, response.status_code)
    assert laptop.post("/generate", json={"prompt": "a cat"}, headers={"host": host}).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost", "localhost:8000", "[::1]:7860"])
def test_loopback_names_reach_the_studio(laptop: TestClient, host: str) -> None:
    assert laptop.get("/session", headers={"host": host}).json() == {"account": LOCAL_ACCOUNT}


def test_allowed_hosts_add_names_on_loopback_and_bind_a_public_address(settings: Settings) -> None:
    with TestClient(create_app(replace(settings, allowed_hosts=("studio.lan",))), base_url="http://127.0.0.1") as http:
        assert http.get("/healthz", headers={"host": "studio.lan"}).status_code == 200
        assert http.get("/healthz", headers={"host": "other.lan"}).status_code == 400
    public = replace(settings, host="0.0.0.0", guests="on", allowed_hosts=("studio.example",))
    with TestClient(create_app(public), base_url="http://studio.example") as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/healthz", headers={"host": "127.0.0.1"}).status_code == 400
    with TestClient(create_app(replace(public, allowed_hosts=())), base_url="http://anything.example") as http:
        assert http.get("/healthz").status_code == 200  # a public bind without the setting answers any name


@pytest.mark.parametrize(
    "header",
    [
        {"x-forwarded-for": "203.0.113.9"},
        {"forwarded": "for=203.0.113.9;proto=https"},
        {"x-real-ip": "203.0.113.9"},
        {"x-forwarded-host": "studio.example"},
    ],
)
def test_a_request_through_a_proxy_is_never_the_local_owner(laptop: TestClient, header: dict[str, str]) -> None:
    assert laptop.get("/session", headers=header).json() == {"account": None}
    assert laptop.get("/jobs/local", headers=header).status_code == 401
    assert laptop.post("/generate", json={"prompt": "a cat"}, headers=header).status_code == 401


ODD_COOKIES = ['prefs={"theme": "dark"}', "note=a b", "path=C:\\\\x", "name=Zoë", '"quoted"=1', "flag"]


@pytest.mark.parametrize("odd", ODD_COOKIES)
def test_an_odd_cookie_before_ours_does_not_erase_the_identity(settings: Settings, redis: Redis, odd: str) -> None:
    account, key = AccountStore(redis).create(f"odd-{uuid.uuid4().hex[:8]}")
    token = new_guest_token()
    public = replace(settings, host="0.0.0.0", guests="on")
    with TestClient(create_app(public), base_url="http://studio.example") as http:
        as_guest = http.get("/session", headers={"cookie": f"{odd}; {GUEST_COOKIE}={token}".encode()}).json()
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        signed_in = http.get("/session", headers={"cookie": f"{odd}; {KEY_COOKIE}={key}".encode()}).json()
    assert as_guest == {"account": guest_account(token)}
    assert signed_in == {"account": account.name}  # not silently the local owner


@pytest.mark.parametrize("bad", ["short", "x" * 65, "a b c", "", "ünïcødé" * 6])
def test_a_page_load_with_an_invalid_guest_token_gets_a_new_one(settings: Settings, bad: str) -> None:
    public = replace(settings, host="0.0.0.0", guests="on")
    with TestClient(create_app(public), base_url="http://studio.example") as http:
        page = http.get("/", headers={"accept": "text/html", "cookie": f"{GUEST_COOKIE}={bad}".encode()})
        assert page.status_code == 200
        issued = page.cookies.get(GUEST_COOKIE)
        assert issued and issued != bad
        assert http.get("/session", headers={"cookie": f"{GUEST_COOKIE}={issued}"}).json() == {
            "account": guest_account(issued)
        }


@pytest.mark.parametrize("path", ["/gradio_api/upload", "/gradio_api/upload/", "/gradio_api/upload?upload_id=x"])
def test_nobody_can_upload_a_file_for_the_server_to_keep_and_serve(laptop: TestClient, path: str) -> None:
    files = {"files": ("page.html", b"<script>alert(document.cookie)</script>", "text/html")}
    response = laptop.post(path, files=files)
    assert response.status_code == 404
    assert response.json() == {"detail": "uploads are not accepted here"}
    assert laptop.get("/gradio_api/upload_progress?upload_id=x").status_code == 404
