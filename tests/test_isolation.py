"""Two accounts (and two guests) try every door into each other's jobs: REST, gradio_client, file URLs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from gradio_client import Client
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.guests import GUEST_COOKIE
from mochi_app.video import job_videos
from tests.harness import SMALL, Child, start_web, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

TINY_JOB = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def web(module_settings: Settings, worker: Child, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = replace(module_settings, guests="on")
    child, url = start_web(settings, tmp_path_factory.mktemp("web") / "web.log")
    yield url
    child.stop()


@pytest.fixture(scope="module")
def keys(redis_url: str) -> dict[str, str]:
    store = AccountStore(Redis.from_url(redis_url))
    return {who: store.create(f"{who}-{uuid.uuid4().hex[:8]}")[1] for who in ("alice", "bob")}


def as_(keys: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}"}


@pytest.fixture(scope="module")
def alices_job(web: str, keys: dict[str, str]) -> dict[str, Any]:
    """A completed job of Alice's, with its video on disk."""
    headers = as_(keys, "alice")
    job = httpx.post(f"{web}/generate", json={"prompt": "alice's secret", **SMALL}, headers=headers).json()

    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(f"{web}/status/{job['job_id']}", headers=headers).json()
        return status if status["status"] == "COMPLETED" else None

    return wait_for(done, 120, "alice's job")  # type: ignore[return-value]


def missing_like(job_id: str, web: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """The answer to the same request for a job id that never existed, with the id swapped back."""
    missing = str(uuid.uuid4())
    other = httpx.request(method, f"{web}{path.replace(job_id, missing)}", headers=headers)
    return other.status_code, other.text.replace(missing, job_id)


@pytest.mark.parametrize(("method", "path"), [("GET", "/status/{id}"), ("GET", "/download/{id}"),
                                              ("GET", "/thumbnail/{id}"), ("GET", "/preview/{id}"),
                                              ("POST", "/cancel/{id}"), ("POST", "/final/{id}")])  # fmt: skip
def test_rest_answers_someone_elses_job_exactly_like_a_missing_one(
    web: str, keys: dict[str, str], alices_job: dict[str, Any], method: str, path: str
) -> None:
    job_id = alices_job["job_id"]
    for who in ({"Authorization": f"Bearer {keys['bob']}"}, {}):  # Bob, and the keyless local owner
        response = httpx.request(method, f"{web}{path.format(id=job_id)}", headers=who)
        assert response.status_code == 404
        assert (response.status_code, response.text) == missing_like(job_id, web, method, path.format(id=job_id), who)
    assert httpx.request(method, f"{web}{path.format(id=job_id)}", headers=as_(keys, "alice")).status_code != 404


def test_nobody_reads_or_cancels_another_accounts_sweep(web: str, keys: dict[str, str]) -> None:
    alice = as_(keys, "alice")
    made = httpx.post(f"{web}/sweep", json={"prompt": "alice's sweep", **SMALL, "count": 2}, headers=alice).json()
    batch = f"/batches/{made['batch_id']}"
    try:
        for method, path in (("GET", batch), ("POST", f"{batch}/cancel")):
            for who in (as_(keys, "bob"), {}):  # Bob, and the keyless local owner
                answer = httpx.request(method, f"{web}{path}", headers=who)
                assert answer.status_code == 404
                assert (answer.status_code, answer.text) == missing_like(made["batch_id"], web, method, path, who)
        assert "CANCELLED" not in httpx.get(f"{web}{batch}", headers=alice).json()["statuses"]
        bob = Client(web, headers=as_(keys, "bob"), verbose=False)
        for api_name in ("/batch", "/cancel_batch"):
            with pytest.raises(Exception, match=f"no batch with id '{made['batch_id']}'"):
                bob.predict(made["batch_id"], api_name=api_name)
    finally:
        httpx.post(f"{web}{batch}/cancel", headers=alice)


def test_nobody_lists_another_accounts_jobs(web: str, keys: dict[str, str], alices_job: dict[str, Any]) -> None:
    alice = httpx.get(f"{web}/session", headers=as_(keys, "alice")).json()["account"]
    bob = httpx.get(f"{web}/session", headers=as_(keys, "bob")).json()["account"]
    nobody = f"nobody-{uuid.uuid4().hex[:6]}"
    theirs = httpx.get(f"{web}/jobs/{alice}", headers=as_(keys, "bob"))
    missing = httpx.get(f"{web}/jobs/{nobody}", headers=as_(keys, "bob"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(alice, nobody) == missing.text

    def listed(who: str, account: str) -> list[str]:
        return [job["job_id"] for job in httpx.get(f"{web}/jobs/{account}", headers=as_(keys, who)).json()["jobs"]]

    assert alices_job["job_id"] not in listed("bob", bob)
    assert alices_job["job_id"] in listed("alice", alice)


def test_gradio_client_is_refused_the_same_way(web: str, keys: dict[str, str], alices_job: dict[str, Any]) -> None:
    bob = Client(web, headers=as_(keys, "bob"), verbose=False)
    job_id = alices_job["job_id"]
    for api_name in ("/status", "/cancel", "/make_final"):
        with pytest.raises(Exception, match=f"no job with id '{job_id}'"):
            bob.predict(job_id, api_name=api_name)
    assert job_id not in [job["job_id"] for job in bob.predict(limit=100, api_name="/jobs")["jobs"]]
    alice = Client(web, headers=as_(keys, "alice"), verbose=False)
    assert alice.predict(job_id, api_name="/status")["status"] == "COMPLETED"
    with pytest.raises(Exception, match="that API key is not valid"):
        Client(web, headers={"Authorization": "Bearer mochi_made_up"}, verbose=False).predict(
            job_id, api_name="/status"
        )


def test_no_file_url_serves_a_video_to_anyone_else(
    web: str, keys: dict[str, str], alices_job: dict[str, Any], module_settings: Settings
) -> None:
    job_id = alices_job["job_id"]
    [video] = job_videos(module_settings.videos_dir, job_id)
    for path in (
        f"/gradio_api/file={video}",
        f"/file={video}",
        f"/gradio_api/file={video.relative_to(module_settings.data_dir)}",
        f"/download/{job_id}.mp4",
        f"/download/..%2F..%2Fvideos%2F{job_id}.mp4",
        "/download/..%2F..%2F..%2Fetc%2Fpasswd",
        "/download/%2e%2e",
        "/status/" + "x" * 10_000,
    ):
        response = httpx.get(f"{web}{path}", headers=as_(keys, "bob"))
        assert response.status_code in {403, 404, 422}, (path, response.status_code)
        assert response.headers.get("content-type") != "video/mp4"
        assert b"ftyp" not in response.content[:64]


def test_two_guests_each_see_only_their_own(web: str) -> None:
    guests = []
    for _ in range(2):
        browser = httpx.Client(base_url=web)
        page = browser.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and GUEST_COOKIE in browser.cookies
        guests.append(browser)
    first, second = guests
    assert first.cookies[GUEST_COOKIE] != second.cookies[GUEST_COOKIE]
    job = first.post("/generate", json={"prompt": "a guest's clip", **TINY_JOB}).json()
    me = first.get("/session").json()["account"]
    assert me.startswith("guest-") and me != second.get("/session").json()["account"]
    assert first.get(f"/status/{job['job_id']}").status_code == 200
    assert second.get(f"/status/{job['job_id']}").status_code == 404
    assert second.get(f"/jobs/{me}").status_code == 404
    assert job["job_id"] in [j["job_id"] for j in first.get(f"/jobs/{me}").json()["jobs"]]


def test_signing_a_browser_in_with_a_key_reaches_that_account(web: str, keys: dict[str, str]) -> None:
    browser = httpx.Client(base_url=web)
    browser.get("/", headers={"Accept": "text/html"})
    guest = browser.get("/session").json()["account"]
    assert browser.post("/session", json={"api_key": "mochi_wrong"}).status_code == 401
    signed_in = browser.post("/session", json={"api_key": keys["alice"]})
    assert signed_in.status_code == 200 and signed_in.json()["account"].startswith("alice-")
    assert browser.get("/session").json()["account"] == signed_in.json()["account"]
    assert browser.delete("/session").status_code == 204
    assert browser.get("/session").json()["account"] == guest


def test_a_newcomer_waits_behind_at_most_one_job_of_a_heavy_account(web: str, keys: dict[str, str]) -> None:
    heavy, light = as_(keys, "alice"), as_(keys, "bob")
    backlog = [
        httpx.post(f"{web}/generate", json={"prompt": f"backlog {n}", **TINY_JOB}, headers=heavy).json()
        for n in range(8)  # enough to wait behind; more only makes a loaded machine slower to finish them
    ]
    newcomer = httpx.post(f"{web}/generate", json={"prompt": "just one", **TINY_JOB}, headers=light).json()
    assert newcomer["queue_position"] is not None and newcomer["queue_position"] <= 1

    def all_done() -> list[dict[str, Any]] | None:
        jobs = [
            httpx.get(f"{web}/status/{job['job_id']}", headers=headers).json()
            for job, headers in [*((job, heavy) for job in backlog), (newcomer, light)]
        ]
        return jobs if all(job["status"] == "COMPLETED" for job in jobs) else None

    finished: list[dict[str, Any]] = wait_for(all_done, 240, "all 9 jobs", interval_s=0.5)  # type: ignore[assignment]
    *heavy_jobs, light_job = finished
    overtaking = [job for job in heavy_jobs if light_job["created_at"] < job["started_at"] < light_job["started_at"]]
    assert len(overtaking) <= 1, [job["request"]["prompt"] for job in overtaking]


def test_oversized_and_undecodable_bodies_get_4xx(web: str) -> None:
    huge = httpx.post(f"{web}/generate", json={"prompt": "a" * 100_000})
    assert huge.status_code == 413 and "the limit is 65536" in huge.json()["detail"]
    streamed = httpx.post(
        f"{web}/generate",
        content=iter([b'{"prompt": "', b"a" * 70_000, b'"}']),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    latin1 = httpx.post(f"{web}/generate", content='{"prompt": "café"}'.encode("latin-1"),
                        headers={"content-type": "application/json"})  # fmt: skip
    assert (latin1.status_code, latin1.json()["detail"]) == (400, "the body must be JSON encoded as UTF-8")
    control = httpx.post(f"{web}/generate", json={"prompt": "bell\u0007"})
    assert control.status_code == 422 and "control character" in control.json()["detail"]
