"""Attacks from outside, each class with its variants: hostile Host headers, proxies, odd cookies."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.accounts import LOCAL_ACCOUNT, AccountStore
from mochi_app.callers import KEY_COOKIE
from mochi_app.config import Limits, Settings
from mochi_app.guests import GUEST_COOKIE, GUEST_SECRET_FILE, BadGuestSecret, GuestTokens, address_group, load_secret
from mochi_app.queue import JobQueue, TooBusy
from mochi_app.records import JobStatus
from mochi_app.schemas import GenerationRequest, InvalidRequest
from mochi_app.store import JobStore
from mochi_app.studio import Studio
from mochi_app.supervisor import STEADY_S, Backoff
from mochi_app.tokens import TokenCounter
from mochi_app.ui import FORM_FIELDS
from mochi_app.video import attempt_video_path
from mochi_app.web import create_app
from tests.harness import (
    REPO,
    Children,
    RunningApp,
    free_port,
    guest_cookie,
    new_account,
    newcomer_env,
    start_web,
    wait_for,
)

TINY = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}

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
    assert laptop.get("/session", headers={"host": host}).json()["account"] == LOCAL_ACCOUNT


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
    assert laptop.get("/session", headers=header).json()["account"] is None
    assert laptop.get("/jobs/local", headers=header).status_code == 401
    assert laptop.post("/generate", json={"prompt": "a cat"}, headers=header).status_code == 401


ODD_COOKIES = ['prefs={"theme": "dark"}', "note=a b", "path=C:\\\\x", "name=Zoë", '"quoted"=1', "flag"]


@pytest.mark.parametrize("odd", ODD_COOKIES)
def test_an_odd_cookie_before_ours_does_not_erase_the_identity(settings: Settings, redis: Redis, odd: str) -> None:
    account, key = AccountStore(redis).create(f"odd-{uuid.uuid4().hex[:8]}")
    public = create_app(replace(settings, host="0.0.0.0", guests="on"))
    guest_tokens = public.state.studio.callers.guest_tokens
    token = guest_tokens.mint()
    with TestClient(public, base_url="http://studio.example") as http:
        as_guest = http.get("/session", headers={"cookie": f"{odd}; {GUEST_COOKIE}={token}".encode()}).json()
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        signed_in = http.get("/session", headers={"cookie": f"{odd}; {KEY_COOKIE}={key}".encode()}).json()
    assert as_guest["account"] == guest_tokens.account(token)
    assert signed_in["account"] == account.name  # not silently the local owner


@pytest.mark.parametrize("bad", ["short", "x" * 65, "a b c", "", "ünïcødé" * 6])
def test_a_page_load_with_an_invalid_guest_token_gets_a_new_one(settings: Settings, bad: str) -> None:
    public = create_app(replace(settings, host="0.0.0.0", guests="on"))
    with TestClient(public, base_url="http://studio.example") as http:
        page = http.get("/", headers={"accept": "text/html", "cookie": f"{GUEST_COOKIE}={bad}".encode()})
        assert page.status_code == 200
        issued = page.cookies.get(GUEST_COOKIE)
        assert issued and issued != bad
        session = http.get("/session", headers={"cookie": f"{GUEST_COOKIE}={issued}"}).json()
        assert session["account"] == public.state.studio.callers.guest_tokens.account(issued)


@pytest.mark.parametrize("path", ["/gradio_api/upload", "/gradio_api/upload/", "/gradio_api/upload?upload_id=x"])
def test_nobody_can_upload_a_file_for_the_server_to_keep_and_serve(laptop: TestClient, path: str) -> None:
    files = {"files": ("page.html", b"<script>alert(document.cookie)</script>", "text/html")}
    response = laptop.post(path, files=files)
    assert response.status_code == 404
    assert response.json() == {"detail": "not offered here"}
    assert laptop.get("/gradio_api/upload_progress?upload_id=x").status_code == 404
    assert laptop.get("/gradio_api/deep_link?session_hash=x").status_code == 404  # a copy of a session's state


@pytest.mark.parametrize(
    "invisible", ["\u200b\u200b", "\ufeff", "\u202e\u202d", "\U000e0041\U000e0042", "\u00a0\u2028"]
)
def test_a_prompt_of_invisible_characters_is_empty(invisible: str) -> None:
    with pytest.raises(InvalidRequest, match="prompt must not be empty"):
        GenerationRequest.parse({"prompt": invisible}, Limits())
    assert GenerationRequest.parse({"prompt": "a cat", "negative_prompt": invisible}, Limits()).negative_prompt == ""


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_healthz_counts_a_dead_worker_out_within_its_heartbeat(
    settings: Settings, redis: Redis, tmp_path: Path, children: Children
) -> None:
    quick = replace(settings, heartbeat_ttl_s=2)
    studio = Studio(redis, quick)
    worker = children.worker(quick, tmp_path / "worker.log")
    assert studio.health().live_workers == 1
    os.kill(worker.process.pid, signal.SIGKILL)  # RQ's registration stays for minutes
    worker.process.wait()
    wait_for(lambda: studio.health().live_workers == 0, 120, "the dead worker to be counted out")
    assert studio.health().status == "degraded"


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


@pytest.mark.slow  # starts processes: see README, "Tests"
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


@pytest.fixture
def public_web(settings: Settings) -> Iterator[TestClient]:
    """The web on a public bind with guests, as on a Space or behind a proxy."""
    with TestClient(
        create_app(replace(settings, host="0.0.0.0", guests="on")), base_url="http://studio.example"
    ) as http:
        yield http


def forged_tokens(real: str) -> list[str]:
    """What an attacker tries in place of a token this server signed."""
    nonce, signature = real.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return [
        secrets.token_urlsafe(32),  # the old, unsigned kind: any 32-64 characters
        f"{secrets.token_urlsafe(24)}.{signature}",  # another nonce with a real signature
        f"{nonce}.{flipped}",  # a signature one character off
        GuestTokens(secrets.token_bytes(32)).mint(),  # signed with another secret
        f"{nonce}.{signature}.{signature}",
        f"{nonce}{signature}",
        nonce,
    ]


def test_a_forged_or_unsigned_guest_token_is_a_stranger(public_web: TestClient) -> None:
    real = public_web.get("/", headers={"accept": "text/html"}).cookies[GUEST_COOKIE]
    public_web.cookies.clear()
    me = public_web.get("/session", cookies={GUEST_COOKIE: real}).json()["account"]
    assert me.startswith("guest-")
    for forged in forged_tokens(real):
        cookie = {"cookie": f"{GUEST_COOKIE}={forged}"}
        assert public_web.get("/session", headers=cookie).json()["account"] is None, forged
        assert public_web.post("/generate", json={"prompt": "a cat"}, headers=cookie).status_code == 401, forged
        assert public_web.get(f"/jobs/{me}", headers=cookie).status_code == 401, forged
        page = public_web.get("/", headers={"accept": "text/html", **cookie})
        assert page.cookies[GUEST_COOKIE] not in {forged, real}  # a page load makes it a new guest
        public_web.cookies.clear()


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_the_guest_secret_is_made_once_private_and_shared_by_every_process(tmp_path: Path) -> None:
    path = tmp_path / "data" / GUEST_SECRET_FILE
    load = f"import pathlib, mochi_app.guests as g; print(g.load_secret(pathlib.Path({str(path)!r})).hex())"
    racing = [subprocess.Popen([sys.executable, "-c", load], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    secrets_seen = {process.communicate(timeout=60)[0].strip() for process in racing}
    assert len(secrets_seen) == 1 and secrets_seen == {load_secret(path).hex()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in path.parent.iterdir()] == [GUEST_SECRET_FILE]  # no draft left behind
    path.write_text("not hex")
    with pytest.raises(BadGuestSecret, match="delete it to make a new one"):
        load_secret(path)


def test_one_address_gets_a_bounded_number_of_new_guests(settings: Settings) -> None:
    app = create_app(replace(settings, host="0.0.0.0", guests="on", new_guests_per_hour=3))
    page = {"accept": "text/html"}
    with TestClient(app, base_url="http://studio.example", client=("198.51.100.7", 5000)) as http:
        tokens = []
        for _ in range(3):
            tokens.append(http.get("/", headers=page).cookies[GUEST_COOKIE])
            http.cookies.clear()
        refused = http.get("/", headers=page)
        assert refused.status_code == 429 and GUEST_COOKIE not in refused.cookies
        assert 0 < int(refused.headers["retry-after"]) <= 3601
        assert "too many new guests" in refused.json()["detail"]
        # A guest it already has keeps working, and so does everyone else.
        assert http.get("/", headers=page, cookies={GUEST_COOKIE: tokens[0]}).status_code == 200
    for client in [("198.51.100.8", 5000), ("2001:db8:1::1", 5000)]:
        with TestClient(app, base_url="http://studio.example", client=client) as http:
            assert GUEST_COOKIE in http.get("/", headers=page).cookies
    # One IPv6 subscriber's /64 is one address; an IPv4 address mapped into IPv6 is that IPv4 address.
    assert address_group("2001:db8:1::2") == address_group("2001:db8:1:0:ffff::9") == "2001:db8:1::/64"
    assert address_group("::ffff:198.51.100.7") == "198.51.100.7" != address_group("2001:db8:2::1")


def test_the_queue_has_a_cap_and_guests_from_one_address_share_one(
    redis: Redis, settings: Settings, count_tokens: TokenCounter
) -> None:
    capped = JobQueue(redis, replace(settings, max_queued_jobs=6, max_pending_jobs_per_address=2), count_tokens)
    small = {"prompt": "a cat", "num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}
    here, elsewhere = "198.51.100.7", "198.51.100.8"
    capped.submit(f"guest-{uuid.uuid4().hex}", small, here)
    capped.submit(f"hf-{uuid.uuid4().hex[:8]}", small, here)
    for free_account in (f"guest-{uuid.uuid4().hex}", f"hf-{uuid.uuid4().hex[:8]}"):
        with pytest.raises(TooBusy, match="2 jobs from your address are waiting"):
            capped.submit(free_account, small, here)
    capped.submit(f"guest-{uuid.uuid4().hex}", small, elsewhere)
    capped.submit(new_account(), small, here)  # a keyed account is bound by its own limit only
    capped.submit(new_account(), small, None)
    capped.submit(new_account(), small, here)
    with pytest.raises(TooBusy, match="the queue is full: 6 jobs are waiting") as full:
        capped.submit(new_account(), small, elsewhere)
    assert full.value.retry_after_s > 0
    assert capped.depth() == 6


def test_rest_and_gradio_record_the_submitters_address(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 5000)) as http:
        job = http.post("/generate", json={"prompt": "a cat"}).json()
        assert app.state.studio.store.get(job["job_id"]).address == "127.0.0.1"
        called = http.post(
            "/gradio_api/call/submit", json={"data": ["a dog", "", 7, 64, 64, 2, 4.5, None, 30, None, None]}
        ).json()
        events = http.get(f"/gradio_api/call/submit/{called['event_id']}").text
    job_id = json.loads(events.split("data: ", 1)[1].splitlines()[0])[0]["job_id"]
    assert app.state.studio.store.get(job_id).address == "127.0.0.1"


def test_a_revoked_key_in_the_cookie_ends_the_session_visibly(settings: Settings, redis: Redis) -> None:
    accounts = AccountStore(redis)
    account, key = accounts.create(f"gone-{uuid.uuid4().hex[:8]}")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        http.cookies.set(KEY_COOKIE, key)
        assert http.get("/session").json()["account"] == account.name
        accounts.revoke(account.name)
        assert http.get("/session").json()["account"] is None  # not quietly the local owner
        refused = http.post("/generate", json={"prompt": "a cat"})
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        assert http.delete("/session").status_code == 204
        http.cookies.clear()
        assert http.get("/session").json()["account"] == LOCAL_ACCOUNT


def gradio_event(
    client: httpx.Client, fn_index: int, data: list[Any], session_hash: str, read: bool = True
) -> list[dict[str, Any]]:
    """Join a page event as the page's script does, then read the session's stream until it completes."""
    body = {"fn_index": fn_index, "data": data, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    joined = client.post("/gradio_api/queue/join", json=body)
    assert joined.status_code == 200, joined.text
    return read_session(client, session_hash) if read else []


def read_session(client: httpx.Client, session_hash: str, within_s: float = 30) -> list[dict[str, Any]]:
    """Every message on a session's event stream until an event completes, or `within_s` passes with
    only heartbeats (an event whose messages another reader took never completes here)."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash}, timeout=60) as stream:
        if stream.status_code != 200:
            return messages
        for line in stream.iter_lines():
            if line.startswith("data: "):
                messages.append(json.loads(line.removeprefix("data: ")))
                if messages[-1].get("msg") == "process_completed" or time.monotonic() > deadline:
                    break
    return messages


@pytest.fixture(scope="module")
def public_server(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve` on a public address with guests, as on a Space."""
    settings = replace(module_settings, guests="on")
    child, url = start_web(settings, tmp_path_factory.mktemp("public") / "web.log", MOCHI_HOST="0.0.0.0")
    yield url
    child.stop()


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_a_replayed_session_hash_opens_nothing_of_the_visitors(public_server: str) -> None:
    dependencies = httpx.get(f"{public_server}/config").json()["dependencies"]
    event = {d["api_name"]: d["id"] for d in dependencies}
    refresh = event["refresh"]
    victim = httpx.Client(base_url=public_server, cookies={GUEST_COOKIE: guest_cookie(public_server)})
    secret_prompt = f"a private prompt {uuid.uuid4().hex[:8]}"
    session_hash = secrets.token_hex(6)
    # The visitor submits from the page, which then follows the job (the session's state): its card and
    # its gallery tile show the prompt.
    asked = {"prompt": secret_prompt, "negative_prompt": "", **TINY, "guidance_scale": 4.5, "seed": 0, "fps": 30}
    form = [*(asked[name] for name in FORM_FIELDS), True]  # the page's inputs: the request's fields, "Random seed"
    assert gradio_event(victim, event["submit_form"], form, session_hash)[-1]["success"]
    following = [None, [None], None, None]  # what the page sends for the state inputs: the server has their values
    assert secret_prompt in json.dumps(gradio_event(victim, refresh, following, session_hash))

    strangers = {
        "no credentials": httpx.Client(base_url=public_server),
        "another guest": httpx.Client(base_url=public_server, cookies={GUEST_COOKIE: guest_cookie(public_server)}),
        "a forged guest": httpx.Client(base_url=public_server, cookies={GUEST_COOKIE: secrets.token_urlsafe(32)}),
    }
    for who, stranger in strangers.items():
        seen = [
            gradio_event(stranger, refresh, following, session_hash),  # the followed job, from the session's state
            stranger.get("/gradio_api/deep_link", params={"session_hash": session_hash}).text,
        ]
        # The visitor's next event, read from the stream under the visitor's hash before the visitor reads it.
        gradio_event(victim, refresh, following, session_hash, read=False)
        seen.append(read_session(stranger, session_hash))
        assert secret_prompt not in json.dumps(seen), who
        assert secret_prompt in json.dumps(read_session(victim, session_hash)), who  # still the visitor's


def test_before_any_worker_starts_a_long_prompt_is_refused_not_queued(settings: Settings) -> None:
    """A deploy's first minutes: no worker has published its tokenizer, so the web cannot count tokens."""
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        assert http.app.state.studio.model() is None  # type: ignore[attr-defined]
        refused = http.post("/generate", json={"prompt": "a cat " * 10_000})
        assert refused.status_code == 422
        assert "until the model's tokenizer is known" in refused.json()["errors"]["prompt"]
        assert http.post("/generate", json={"prompt": "a cat walks on the beach"}).status_code == 202


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_slow_clients_are_let_go_and_long_answers_are_not(
    module_settings: Settings, tmp_path: Path, children: Children
) -> None:
    _, url = children.web(
        module_settings, tmp_path / "web.log", MOCHI_REQUEST_TIMEOUT_S="1", GRADIO_HEARTBEAT_INTERVAL="3"
    )
    port = int(url.rsplit(":", 1)[1])
    dribbles = [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"POST /generate HTTP/1.1\r\n"]
    dribbles.append(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")  # a slow body
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    for n, client in enumerate(slow):
        client.sendall(dribbles[n % len(dribbles)])  # then nothing more, or a byte now and then

    def all_closed() -> bool:
        for client in slow:
            with contextlib.suppress(OSError):
                client.sendall(b"x")
        return all(_closed(client) for client in slow)

    wait_for(all_closed, 120, "the server to close every slow connection", interval_s=0.2)
    assert httpx.get(f"{url}/healthz").status_code == 200  # everyone else is served meanwhile
    # A page's event stream outlasts the read deadline: the request was whole, only the answer is long.
    with httpx.stream("GET", f"{url}/gradio_api/heartbeat/{secrets.token_hex(6)}", timeout=60) as stream:
        beats = (line for line in stream.iter_lines() if line == "data: ALIVE")
        assert [next(beats), next(beats)] == ["data: ALIVE"] * 2  # 3 s apart, past the 1 s deadline


def _closed(client: socket.socket) -> bool:
    """Whether the server has closed this connection (reads its end-of-file without blocking)."""
    client.setblocking(False)
    try:
        return client.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_below_the_free_space_floor_no_job_is_taken(settings: Settings) -> None:
    app = create_app(replace(settings, min_free_disk_bytes=2**62))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        depth = app.state.studio.queue.depth()
        refused = http.post("/generate", json={"prompt": "a cat"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "60"
        assert "nearly out of disk space" in refused.json()["detail"]
        called = http.post(
            "/gradio_api/call/submit", json={"data": ["a dog", "", 7, 64, 64, 2, 4.5, None, 30, None, None]}
        )
        answer = http.get(f"/gradio_api/call/submit/{called.json()['event_id']}").text
        assert "event: error" in answer and "nearly out of disk space" in answer
        assert app.state.studio.queue.depth() == depth


def test_a_restart_waits_twice_as_long_each_time_a_child_dies_young() -> None:
    backoff = Backoff()
    waits = []
    for _ in range(8):
        backoff.started()
        waits.append(backoff.died())
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]
    backoff.started_at -= STEADY_S  # it ran a good while before it died: back to the first wait
    assert backoff.died() == 2 and not backoff.due


def valkey_pid(app: RunningApp) -> int:
    """The embedded server app.py runs (its process title no longer names the data folder)."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == app.child.process.pid and "valkey" in stat_file.with_name("comm").read_text():
                return int(stat_file.parent.name)
    raise AssertionError("app.py runs no valkey-server")


def health(app: RunningApp) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = httpx.get(f"{app.url}/healthz", timeout=5).json()
    except httpx.HTTPError:
        return {"redis": False}
    return answer


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_the_queue_server_killed_comes_back_with_every_accepted_job(tmp_path: Path, children: Children) -> None:
    app = children.app(tmp_path, MOCHI_WARMUP="0")
    jobs = [httpx.post(f"{app.url}/generate", json={"prompt": f"clip {n}", **TINY}).json() for n in range(3)]
    first = valkey_pid(app)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: health(app)["redis"] and valkey_pid(app) != first, 120, "the server to be restarted")
    assert "the queue server exited with code" in app.child.log
    jobs.append(httpx.post(f"{app.url}/generate", json={"prompt": "after the restart", **TINY}).json())
    for job in jobs:
        done = wait_for(lambda job=job: _ended(app, job["job_id"]), 240, f"job {job['job_id']} to end")
        assert done["status"] == "COMPLETED", done


def _ended(app: RunningApp, job_id: str) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = httpx.get(f"{app.url}/status/{job_id}", timeout=5).json()
    except httpx.HTTPError:
        return None
    return status if status.get("status") in {"COMPLETED", "FAILED", "CANCELLED"} else None


def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `folder` (made here) while the test runs; skips where mounting needs root."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB filesystem of its own, to fill up for real."""
    yield from mounted_tmpfs(tmp_path / "small-disk", "size=16m")


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_the_queue_server_on_a_full_disk_comes_back_once_space_is_freed(
    tmp_path: Path, small_disk: Path, children: Children
) -> None:
    # The server's files alone on the small disk, and no floor: the server itself meets the full disk.
    app = children.app(tmp_path, MOCHI_WARMUP="0", MOCHI_SERVER_DIR=str(small_disk), MOCHI_MIN_FREE_DISK_BYTES="0")
    accepted = [httpx.post(f"{app.url}/generate", json={"prompt": "before", **TINY}).json()["job_id"]]
    filler = small_disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 2**20)
    answers = []
    while not app.child.log.count("the queue server exited with code"):
        answer = httpx.post(f"{app.url}/generate", json={"prompt": "while full", **TINY}, timeout=10)
        answers.append(answer.status_code)
        if answer.status_code == 202:
            accepted.append(answer.json()["job_id"])
        assert len(answers) < 10_000, "the server never met the full disk"
    assert set(answers) <= {202, 503}, answers  # accepted, or told to come back: never a 500
    filler.unlink()
    wait_for(lambda: health(app)["redis"], 180, "the server to be back once space is free")
    for job_id in accepted:
        done = wait_for(lambda job_id=job_id: _ended(app, job_id), 240, f"job {job_id} to end")
        assert done["status"] == "COMPLETED", done


def run_to_the_end(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python ARGUMENTS` in the repository, run until it exits (as a command that refuses to start does)."""
    return subprocess.run(
        [sys.executable, *arguments], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only filesystem: root ignores permissions, not that."""
    yield from mounted_tmpfs(tmp_path / "read-only", "ro,size=1m")


@pytest.mark.slow  # starts processes: see README, "Tests"
@pytest.mark.parametrize("command", [["app.py"], ["-m", "mochi_app", "serve"], ["-m", "mochi_app", "worker"]])
def test_a_data_folder_that_cannot_be_written_stops_the_studio_with_one_line(
    read_only_folder: Path, tmp_path: Path, command: list[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for data_dir, reason in [(read_only_folder / "data", "Read-only file system"), (a_file, "File exists")]:
        env = newcomer_env(data_dir, free_port())
        result = run_to_the_end(command, env)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        said = [line for line in result.stderr.splitlines() if "cannot be written" in line]
        assert len(said) == 1 and f"({reason}); point MOCHI_DATA_DIR at a folder" in said[0], result.stderr


@pytest.mark.slow  # starts processes: see README, "Tests"
def test_a_folder_whose_server_runs_already_or_whose_guest_secret_is_not_ours_is_one_line(
    tmp_path: Path, children: Children
) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "videos").mkdir(parents=True)
    children.queue_server(data_dir / "redis")
    env = newcomer_env(data_dir, free_port())
    app = subprocess.run(
        [sys.executable, "app.py"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert app.returncode == 1 and "Traceback" not in app.stderr, app.stderr
    assert "app.py: error: a server for" in app.stderr and "is already running" in app.stderr
    (data_dir / GUEST_SECRET_FILE).write_text("not a secret")
    public = {**env, "MOCHI_HOST": "0.0.0.0", "MOCHI_GUESTS": "on"}
    web = run_to_the_end(["-m", "mochi_app", "serve"], public)
    assert web.returncode == 2 and "Traceback" not in web.stderr, web.stderr
    assert "does not hold a guest secret (64 hex digits); delete it" in web.stderr
