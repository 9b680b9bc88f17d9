"""Attacks from outside, each class with its variants: hostile Host headers, proxies, odd cookies."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.accounts import GUEST_COOKIE, KEY_COOKIE, LOCAL_ACCOUNT, AccountStore, guest_account, new_guest_token
from mochi_app.config import Limits, Settings
from mochi_app.schemas import GenerationRequest, InvalidRequest, JobStatus
from mochi_app.store import JobStore
from mochi_app.studio import Studio
from mochi_app.video import attempt_video_path
from mochi_app.web import create_app
from tests.conftest import RunningApp, free_port, start_worker, wait_for

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


@pytest.mark.parametrize(
    "invisible", ["\u200b\u200b", "\ufeff", "\u202e\u202d", "\U000e0041\U000e0042", "\u00a0\u2028"]
)
def test_a_prompt_of_invisible_characters_is_empty(invisible: str) -> None:
    with pytest.raises(InvalidRequest, match="prompt must not be empty"):
        GenerationRequest.parse({"prompt": invisible}, Limits())
    assert GenerationRequest.parse({"prompt": "a cat", "negative_prompt": invisible}, Limits()).negative_prompt == ""


def test_healthz_counts_a_dead_worker_out_within_its_heartbeat(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    quick = replace(settings, heartbeat_ttl_s=2)
    studio = Studio(redis, quick)
    worker = start_worker(quick, tmp_path / "worker.log")
    try:
        assert studio.health().live_workers == 1
        os.kill(worker.process.pid, signal.SIGKILL)  # RQ's registration stays for minutes
        worker.process.wait()
        wait_for(lambda: studio.health().live_workers == 0, 30, "the dead worker to be counted out")
        assert studio.health().status == "degraded"
    finally:
        worker.stop()


def test_the_owner_can_ask_for_a_video_with_head_and_a_gone_file_offers_no_link(
    settings: Settings, laptop: TestClient
) -> None:
    job = laptop.post("/generate", json={"prompt": "a cat", "num_frames": 7, "height": 64, "width": 64}).json()
    record = JobStore(Redis.from_url(settings.redis_url or "")).get(job["job_id"])
    assert record is not None
    video = attempt_video_path(settings.videos_dir, job["job_id"])
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    done = record.model_copy(update={"status": JobStatus.COMPLETED, "video_path": f"videos/{video.name}"})
    JobStore(Redis.from_url(settings.redis_url or "")).update(job["job_id"], lambda _: done)
    assert laptop.head(f"/download/{job['job_id']}").status_code == 200
    assert laptop.get(f"/status/{job['job_id']}").json()["download_url"] == f"/download/{job['job_id']}"
    video.unlink()
    assert laptop.get(f"/status/{job['job_id']}").json()["download_url"] is None
    assert laptop.head(f"/download/{job['job_id']}").status_code == 409


def test_an_unreachable_queue_answers_503_with_retry_after(settings: Settings) -> None:
    gone = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(gone), base_url="http://127.0.0.1") as http:
        health = http.get("/healthz")
    assert (health.status_code, health.headers.get("retry-after")) == (503, "5")


def test_what_the_studio_writes_is_its_owners_alone(studio_app: RunningApp) -> None:
    written = [p for p in studio_app.data_dir.rglob("*") if p.is_file() and "models" not in p.parts]
    assert any(p.suffix == ".aof" or "appendonly" in p.name for p in written), written
    opened = [(p, oct(p.stat().st_mode & 0o777)) for p in written if p.stat().st_mode & 0o077]
    assert opened == []


EVIL = "https://evil.example"
CROSS_SITE = [
    {"origin": EVIL, "sec-fetch-site": "cross-site"},
    {"origin": EVIL},  # a browser without Fetch metadata
    {"origin": "null"},  # a sandboxed iframe or a data: URL
    {"sec-fetch-site": "cross-site"},  # a form post may send no Origin
]


@pytest.fixture
def public(settings: Settings) -> Iterator[TestClient]:
    """The web on a public address with guests, as on a Space or a server."""
    with TestClient(
        create_app(replace(settings, host="0.0.0.0", guests="on")), base_url="https://studio.example"
    ) as http:
        http.get("/", headers={"accept": "text/html"})  # a visitor's guest cookie
        yield http


@pytest.mark.parametrize("path", ["/generate", "/session", "/gradio_api/call/jobs", "/gradio_api/info", "/jobs/x"])
def test_no_other_site_gets_a_cors_grant(public: TestClient, path: str) -> None:
    preflight = public.options(path, headers={"origin": EVIL, "access-control-request-method": "POST"})
    # Refused, with no Access-Control-Allow-Origin: the browser sends nothing after it.
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    simple = public.get(path, headers={"origin": EVIL})
    assert "access-control-allow-origin" not in simple.headers  # Gradio reflected any Origin here


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_another_sites_page_can_plant_nothing_and_sign_nobody_in(
    public: TestClient, headers: dict[str, str], redis: Redis
) -> None:
    mine = public.get("/session").json()["account"]
    before = public.get(f"/jobs/{mine}").json()["jobs"]
    _, key = AccountStore(redis).create(f"attacker-{uuid.uuid4().hex[:8]}")
    attempts = [
        public.post("/generate", json={"prompt": "planted"}, headers=headers),
        public.post("/session", json={"api_key": key}, headers=headers),
        public.delete("/session", headers=headers),
        public.post("/gradio_api/call/submit", json={"data": ["planted"]}, headers=headers),
        public.post("/gradio_api/call/jobs", json={"data": [20, None]}, headers=headers),
    ]
    assert [response.status_code for response in attempts] == [403] * len(attempts)
    assert public.get("/session").json()["account"] == mine
    assert public.get(f"/jobs/{mine}").json()["jobs"] == before


def test_the_page_itself_scripts_and_allowed_origins_still_write(settings: Settings) -> None:
    allowed = "https://app.example"
    own = replace(settings, host="0.0.0.0", guests="on", cors_origins=(allowed,))
    with TestClient(create_app(own), base_url="https://studio.example") as http:
        http.get("/", headers={"accept": "text/html"})
        page = {"origin": "https://studio.example", "sec-fetch-site": "same-origin"}
        assert http.post("/generate", json={"prompt": "from the page"}, headers=page).status_code == 202
        assert http.post("/generate", json={"prompt": "from a script"}).status_code == 202
        grant = http.options("/generate", headers={"origin": allowed, "access-control-request-method": "POST"})
        assert grant.headers["access-control-allow-origin"] == allowed
        assert grant.headers["access-control-allow-credentials"] == "true"
        other_site = {"origin": allowed, "sec-fetch-site": "cross-site"}
        assert http.post("/generate", json={"prompt": "from the app"}, headers=other_site).status_code == 202


def test_cookies_are_lax_unless_the_page_is_embedded_and_then_partitioned(settings: Settings) -> None:
    with TestClient(
        create_app(replace(settings, host="0.0.0.0", guests="on")), base_url="https://studio.example"
    ) as http:
        cookie = http.get("/", headers={"accept": "text/html"}).headers["set-cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie
    space = replace(settings, host="0.0.0.0", guests="on", space_id="someone/studio")
    with TestClient(create_app(space), base_url="https://someone-studio.hf.space") as http:
        cookie = http.get("/", headers={"accept": "text/html"}).headers["set-cookie"]
    assert "SameSite=None; Secure; Partitioned" in cookie
