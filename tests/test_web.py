"""The web process, live: REST with httpx and the named Gradio events with gradio_client, on a real worker."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import imageio.v3 as iio
import numpy
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image
from redis import Redis
from starlette.routing import Mount

from mochi_app.accounts import LOCAL_ACCOUNT
from mochi_app.config import Settings
from mochi_app.queue import rq_queue
from mochi_app.web import GRADIO_ANALYTICS, create_app
from tests.harness import REPO, SLOW, SMALL, Child, Children, free_port, start_web, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


@pytest.fixture(scope="module")
def web(module_settings: Settings, worker: Child, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m mochi_app serve` on the shared worker's queue; yields its base URL."""
    child, url = start_web(module_settings, tmp_path_factory.mktemp("web") / "web.log")
    yield url
    child.stop()


@pytest.fixture(scope="module")
def client(web: str) -> Client:
    return Client(web, verbose=False)


def finished(web: str, job_id: str) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        job: dict[str, Any] = httpx.get(f"{web}/status/{job_id}").json()
        return job if job["status"] in {"COMPLETED", "FAILED", "CANCELLED"} else None

    return wait_for(terminal, 120, f"job {job_id} to finish", interval_s=0.1)  # type: ignore[return-value]


def test_rest_submit_poll_and_download_a_playable_mp4(web: str, tmp_path: Path) -> None:
    response = httpx.post(f"{web}/generate", json={"prompt": "a cat on a skateboard", **SMALL, "seed": 7})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/status/{job['job_id']}"
    assert (job["status"], job["request"]["seed"], job["download_url"]) == ("PENDING", 7, None)

    done = finished(web, job["job_id"])
    assert done["status"] == "COMPLETED", done
    assert done["progress"] == {"step": 4, "total": 4}
    assert done["download_url"] == f"/download/{job['job_id']}"
    assert done["timings"]["denoise_s"] > 0 and done["model"] == "tiny"

    video = httpx.get(web + done["download_url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert video.headers["content-disposition"].startswith("inline")
    saved = tmp_path / "out.mp4"
    saved.write_bytes(video.content)
    frames = iio.imread(saved)
    assert frames.shape[:3] == (31, 96, 160)

    assert done["thumbnail_url"] == f"/thumbnail/{job['job_id']}"
    thumbnail = httpx.get(web + done["thumbnail_url"])
    assert (thumbnail.status_code, thumbnail.headers["content-type"]) == (200, "image/webp")
    assert thumbnail.headers["content-disposition"].startswith("inline")
    with Image.open(io.BytesIO(thumbnail.content)) as poster:
        assert (poster.size, poster.n_frames) == ((160, 96), 8)
        first = numpy.asarray(poster.convert("RGB"), dtype=numpy.float64)
    assert numpy.abs(first - frames[0]).mean() < 12  # the first frame first, through two lossy codecs


def test_a_running_job_shows_a_live_preview_that_changes_and_is_gone_once_it_ends(web: str) -> None:
    job = httpx.post(f"{web}/generate", json={"prompt": "a lantern drifts upward", **SMALL, "num_inference_steps": 100})
    job_id = job.json()["job_id"]

    def preview_after(url: str | None) -> str | None:
        status = httpx.get(f"{web}/status/{job_id}").json()
        return status["preview_url"] if status["preview_url"] not in {None, url} else None

    try:
        first = wait_for(lambda: preview_after(None), 120, "a first preview")
        assert str(first).startswith(f"/preview/{job_id}?step=")  # a later step where the first status read was late
        image = httpx.get(f"{web}{first}")
        assert (image.status_code, image.headers["content-type"]) == (200, "image/webp")
        assert image.headers["cache-control"] == "private, no-store"
        with Image.open(io.BytesIO(image.content)) as preview:
            assert preview.size == (80, 48)  # half of 160 x 96: one latent pixel is 8 x 8 video pixels, shown 4 x 4
        later = wait_for(lambda: preview_after(str(first)), 120, "a later preview")
        assert httpx.get(f"{web}{later}").status_code == 200  # the tiny model may leave two steps' pictures alike

        done = finished(web, job_id)
        assert (done["status"], done["preview_url"]) == ("COMPLETED", None)
        gone = httpx.get(f"{web}/preview/{job_id}")
        assert (gone.status_code, gone.json()) == (
            409, {"detail": f"job {job_id} is COMPLETED; a preview is made every few steps while RUNNING"}
        )  # fmt: skip
    finally:  # a job left running would hold up the tests after this one
        httpx.post(f"{web}/cancel/{job_id}")


def test_a_video_is_not_served_before_it_is_done(web: str) -> None:
    job = httpx.post(f"{web}/generate", json={"prompt": "never finished", **SLOW}).json()
    cancelled = httpx.post(f"{web}/cancel/{job['job_id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in {"CANCELLED", "RUNNING"}
    assert finished(web, job["job_id"])["status"] == "CANCELLED"
    response = httpx.get(f"{web}/download/{job['job_id']}")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"job {job['job_id']} is CANCELLED; its video can be downloaded once it is COMPLETED"
    }
    again = httpx.post(f"{web}/cancel/{job['job_id']}")
    assert again.status_code == 409 and again.json()["detail"] == f"job {job['job_id']} is already CANCELLED"
    thumbnail = httpx.get(f"{web}/thumbnail/{job['job_id']}")
    assert (thumbnail.status_code, thumbnail.json()) == (
        409, {"detail": f"job {job['job_id']} is CANCELLED; its thumbnail is made once it is COMPLETED"}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("{not json", "the body is not valid JSON"),
        ("[1, 2]", "the body must be a JSON object of parameters"),
        ('{"prompt": "   "}', "prompt must not be empty"),
        ('{"prompt": "a cat", "steps": 4}', "steps is not a known parameter"),
        ('{"prompt": "a cat", "guidance_scale": NaN}', "guidance_scale: input should be a finite number"),
        ('{"prompt": "a cat", "height": 850}', "height must be a multiple of 16, got 850"),
        ('{"prompt": "a cat", "num_frames": "85"}', "num_frames: input should be a valid integer, got '85'"),
    ],
)
def test_bad_bodies_get_422_with_a_message_and_enqueue_nothing(
    web: str, module_settings: Settings, redis: Redis, body: str, detail: str
) -> None:
    queued_before = rq_queue(redis, module_settings).count
    jobs_before = httpx.get(f"{web}/jobs/{LOCAL_ACCOUNT}", params={"limit": 100}).json()["jobs"]
    response = httpx.post(f"{web}/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    assert rq_queue(redis, module_settings).count == queued_before
    assert httpx.get(f"{web}/jobs/{LOCAL_ACCOUNT}", params={"limit": 100}).json()["jobs"] == jobs_before


def test_unknown_jobs_and_accounts_are_404(web: str) -> None:
    missing = str(uuid.uuid4())
    routes = ["/status/", "/download/", "/thumbnail/", "/preview/"]
    for method, path in [*(("GET", route) for route in routes), ("POST", "/cancel/")]:
        response = httpx.request(method, f"{web}{path}{missing}")
        assert (response.status_code, response.json()) == (404, {"detail": f"no job with id {missing!r}"})
    assert httpx.get(f"{web}/jobs/someone-else").status_code == 404
    assert httpx.get(f"{web}/jobs/{LOCAL_ACCOUNT}", params={"limit": 0}).status_code == 422


def test_the_gallery_pages_newest_first_over_rest(web: str) -> None:
    ids = [httpx.post(f"{web}/generate", json={"prompt": f"clip {n}", **SMALL}).json()["job_id"] for n in range(3)]
    first = httpx.get(f"{web}/jobs/{LOCAL_ACCOUNT}", params={"limit": 2}).json()
    second = httpx.get(f"{web}/jobs/{LOCAL_ACCOUNT}", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [job["job_id"] for job in first["jobs"] + second["jobs"]] == ids[::-1]


def test_health_and_docs(web: str) -> None:
    health = httpx.get(f"{web}/healthz")
    assert health.status_code == 200
    body = health.json()
    workers = body.pop("workers")
    assert body | {"queue_depth": 0} == {
        "status": "ok", "redis": True, "live_workers": 1, "queue_depth": 0, "model": "tiny", "detail": None
    }  # fmt: skip
    assert [(worker["stage"], worker["detail"]) for worker in workers] == [("ready", "tiny on cpu")]
    html = httpx.get(f"{web}/docs").text
    assert 'src="/docs-assets/swagger-ui-bundle.js"' in html and "cdn." not in html  # served from here: offline
    asset = httpx.get(f"{web}/docs-assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    spec = httpx.get(f"{web}/openapi.json").json()
    assert {"/generate", "/status/{job_id}", "/download/{job_id}", "/thumbnail/{job_id}", "/preview/{job_id}",
            "/jobs/{account_id}", "/cancel/{job_id}"} <= set(spec["paths"])  # fmt: skip
    body_schema = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["prompt"] and "num_inference_steps" in body_schema["properties"]
    status_body = spec["paths"]["/status/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert status_body["schema"]["$ref"].endswith("/JobPublic")


NAMED_EVENTS = {"/submit", "/sweep", "/quote", "/status", "/jobs", "/cancel", "/batch", "/cancel_batch", "/make_final"}


def test_gradio_api_has_exactly_the_named_events_each_typed_with_its_defaults(client: Client) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == NAMED_EVENTS
    fields = ["prompt", "negative_prompt", "num_frames", "height", "width", "num_inference_steps", "guidance_scale",
              "seed", "fps"]  # fmt: skip
    for name, extra in (("/submit", ["webhook_url", "webhook_events"]), ("/sweep", ["count", "seeds"]), ("/quote", [])):
        parameters = endpoints[name]["parameters"]
        assert [parameter["parameter_name"] for parameter in parameters] == [*fields, *extra], name
        assert parameters[0]["parameter_has_default"] is False
        assert [parameter["parameter_default"] for parameter in parameters[1:9]] == [
            "",
            85,
            480,
            848,
            64,
            4.5,
            None,
            30,
        ]


def test_gradio_client_sweeps_and_makes_one_final(client: Client) -> None:
    batch = client.predict("a kite", num_frames=7, height=64, width=64, num_inference_steps=2, seed=20, count=2,
                           api_name="/sweep")  # fmt: skip
    assert batch["seeds"] == [20, 21] and len(batch["jobs"]) == 2
    assert client.predict(batch["batch_id"], api_name="/batch")["seeds"] == [20, 21]
    final = client.predict(batch["jobs"][1]["job_id"], api_name="/make_final")
    assert (final["request"]["seed"], final["request"]["num_inference_steps"]) == (21, 100)
    client.predict(final["job_id"], api_name="/cancel")
    ended = client.predict(batch["batch_id"], api_name="/cancel_batch")
    assert set(ended["statuses"]) <= {"CANCELLED", "COMPLETED", "RUNNING"}
    listed = client.predict("a kite", seeds=[5, 9], num_frames=7, height=64, width=64, num_inference_steps=2,
                            api_name="/sweep")  # fmt: skip
    assert listed["seeds"] == [5, 9]
    client.predict(listed["batch_id"], api_name="/cancel_batch")
    with pytest.raises(AppError, match="a sweep takes count"):
        client.predict("a kite", api_name="/sweep")


def test_gradio_client_submits_polls_and_fetches(client: Client, web: str) -> None:
    job = client.predict("a lighthouse in a storm", num_frames=7, height=64, width=64, num_inference_steps=2,
                         seed=3, api_name="/submit")  # fmt: skip
    assert (job["status"], job["request"]["seed"]) == ("PENDING", 3)

    def completed() -> dict[str, Any] | None:
        status: dict[str, Any] = client.predict(job["job_id"], api_name="/status")
        return status if status["status"] == "COMPLETED" else None

    done = wait_for(completed, 120, "the job over gradio_client", interval_s=0.2)
    assert httpx.get(web + done["download_url"]).headers["content-type"] == "video/mp4"  # type: ignore[index]
    listed = client.predict(limit=1, api_name="/jobs")
    assert listed["jobs"][0]["job_id"] == job["job_id"]


def test_gradio_client_cancel_and_errors_read_like_rest(client: Client) -> None:
    job = client.predict("a slow one", **SLOW, api_name="/submit")
    assert client.predict(job["job_id"], api_name="/cancel")["status"] in {"CANCELLED", "RUNNING"}
    missing = str(uuid.uuid4())
    with pytest.raises(Exception, match=f"no job with id '{missing}'"):
        client.predict(missing, api_name="/status")
    with pytest.raises(Exception, match="prompt must not be empty"):
        client.predict("  ", api_name="/submit")


def test_the_web_process_imports_neither_torch_nor_diffusers(module_settings: Settings) -> None:
    script = f"""
import sys
from pathlib import Path
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mochi_app.config import Settings
from mochi_app.web import create_app
settings = Settings(data_dir=Path({str(module_settings.data_dir)!r}), redis_url={module_settings.redis_url!r})
with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
    assert http.get("/").status_code == 200 and http.get("/healthz").status_code in (200, 503)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "diffusers", "transformers")))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_web_process_serves_on_uvloop_and_httptools(
    module_settings: Settings, tmp_path: Path, children: Children
) -> None:
    """uvicorn takes its C event loop and HTTP parser when they are installed (requirements.txt pins them)."""
    child, url = children.web(module_settings, tmp_path / "web.log")
    assert httpx.get(f"{url}/healthz").status_code == 200
    mapped = Path(f"/proc/{child.process.pid}/maps").read_text()
    assert "/uvloop/" in mapped
    assert "/httptools/" in mapped


def test_gradio_rebuilds_its_api_figures_every_100th_event_and_an_operator_can_say_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Gradio's default rebuilds them after every event over its last 10,000 (docs/PERFORMANCE.md, Polling).

    The attributes read here are Gradio's own: this fails if an upgrade renames the knobs.
    """
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    for name in GRADIO_ANALYTICS:
        monkeypatch.delenv(name, raising=False)
    queue = gradio_queue(create_app(settings))
    assert (queue.ANALYTICS_MAX_EVENTS, queue.ANAYLTICS_CACHE_FREQUENCY) == (1000, 100)
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "7")
    assert gradio_queue(create_app(settings)).ANAYLTICS_CACHE_FREQUENCY == 7


def gradio_queue(app: FastAPI) -> Any:
    gradio_app = next(route.app for route in app.routes if isinstance(route, Mount) and route.name != "docs-assets")
    return gradio_app.get_blocks()._queue


def test_redis_away_means_503_with_a_clear_message(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        health = http.get("/healthz")
        assert (health.status_code, health.json()["redis"]) == (503, False)
        for response in (http.get(f"/status/{uuid.uuid4()}"), http.post("/generate", json={"prompt": "a cat"})):
            assert response.status_code == 503
            assert response.json() == {"detail": "the job queue is unreachable right now; try again in a moment"}
            assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("limit", "cursor", "message"),
    [
        ("20", None, "limit must be an integer, got '20'"),
        (2.5, None, "limit must be an integer, got 2.5"),
        (True, None, "limit must be an integer, got True"),
        (20, 123, "cursor must be text, got 123"),
        (20, ["1"], "cursor must be text, got ['1']"),
    ],
)
def test_the_jobs_event_refuses_wrongly_typed_arguments_with_a_message(
    client: Client, limit: object, cursor: object, message: str
) -> None:
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(limit, cursor, api_name="/jobs")
