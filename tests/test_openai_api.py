"""`/v1/videos`, the OpenAI-compatible API: the `openai` package unmodified, and each account's own videos."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import imageio.v3 as iio
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mochi_app.config import Settings
from mochi_app.openai_api import to_params
from mochi_app.schemas import InvalidRequest
from mochi_app.web import create_app
from tests.harness import Children, wait_for

warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")  # "Sora ... shut down" notices


def test_seconds_and_size_become_frames_and_pixels_and_the_rest_passes_through() -> None:
    assert to_params({"prompt": "p", "seconds": "1", "size": "96x64", "num_inference_steps": "2"}) == {
        "prompt": "p",
        "num_frames": 31,
        "width": 96,
        "height": 64,
        "num_inference_steps": 2,
    }
    assert to_params({"prompt": "p", "seconds": "2", "fps": "24"})["num_frames"] == 49
    assert to_params({"prompt": "p", "model": "mochi-1-preview", "guidance_scale": "3.5"})["guidance_scale"] == 3.5
    for bad, field in (({"model": "sora-2"}, "model"), ({"size": "big"}, "size"), ({"seconds": "x"}, "seconds"),
                       ({"seconds": "0"}, "seconds"), ({"seconds": "nan"}, "seconds")):  # fmt: skip
        with pytest.raises(InvalidRequest) as refused:
            to_params({"prompt": "p", **bad})
        assert set(refused.value.errors) == {field}


def test_refusals_come_in_openais_error_shape(settings: Settings, two_accounts: tuple[str, str, str]) -> None:
    _, my_key, _ = two_accounts
    auth = {"Authorization": f"Bearer {my_key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        too_long = http.post("/v1/videos", json={"prompt": "p", "seconds": "60"}, headers=auth)
        assert too_long.status_code == 400
        error = too_long.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "num_frames" and "163" in error["message"]
        odd = http.post("/v1/videos", data={"prompt": "p", "size": "100x64"}, headers=auth)  # a form, as the SDK sends
        assert odd.status_code == 400 and "multiple of 16" in odd.json()["error"]["message"]
        unknown = http.post("/v1/videos", json={"prompt": "p", "style": "noir"}, headers=auth)
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "style"
        upload = http.post("/v1/videos", data={"prompt": "p"}, files={"input_reference": ("a.png", b"x")}, headers=auth)
        assert upload.status_code == 400 and upload.json()["error"]["param"] == "input_reference"
        stranger = http.get("/v1/videos", headers={"Authorization": "Bearer sk-not-ours"})
        assert stranger.status_code == 401 and stranger.json()["error"]["type"] == "authentication_error"
        assert http.get("/v1/videos/nope", headers=auth).json()["error"]["message"] == "no job with id 'nope'"
        assert http.get("/status/nope", headers=auth).json() == {"detail": "no job with id 'nope'"}  # REST as before


@pytest.mark.slow
def test_the_openai_package_creates_waits_downloads_lists_and_deletes_and_no_one_else_can(
    module_settings: Settings, children: Children, tmp_path: Path, two_accounts: tuple[str, str, str]
) -> None:
    _, my_key, their_key = two_accounts
    _, url = children.web(module_settings, tmp_path / "web.log")
    children.worker(module_settings, tmp_path / "worker.log")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=my_key, max_retries=0)
    stranger = openai.OpenAI(base_url=f"{url}/v1", api_key=their_key, max_retries=0)

    video = client.videos.create(
        model="mochi-1-preview", prompt="a red fox", seconds="1", size="96x64", extra_body={"num_inference_steps": 2}
    )
    assert (video.object, video.status, video.size, video.seconds, video.model) == (
        "video", "queued", "96x64", "1.03", "mochi-1-preview"
    )  # fmt: skip
    done = wait_for(
        lambda: (v := client.videos.retrieve(video.id)).status in {"completed", "failed"} and v, 240, "the video"
    )
    assert done.status == "completed" and done.progress == 100 and done.completed_at is not None
    content = client.videos.download_content(video.id)
    (tmp_path / "fox.mp4").write_bytes(content.content)
    assert iio.imread(tmp_path / "fox.mp4").shape == (31, 64, 96, 3)
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.response.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumbnail.content)) as poster:
        assert poster.size == (96, 64)

    remix = client.videos.remix(video.id, prompt="a blue fox")
    assert remix.remixed_from_video_id == video.id and remix.size == "96x64"
    listed = client.videos.list(limit=10)
    assert [item.id for item in listed.data] == [remix.id, video.id]
    assert [item.id for item in client.videos.list(limit=1, after=remix.id).data] == [video.id]

    for operation in (
        lambda: stranger.videos.retrieve(video.id),
        lambda: stranger.videos.download_content(video.id),
        lambda: stranger.videos.download_content(video.id, variant="thumbnail"),
        lambda: stranger.videos.delete(video.id),
        lambda: stranger.videos.remix(video.id, prompt="mine now"),
    ):
        with pytest.raises(openai.NotFoundError):
            operation()
    assert stranger.videos.list().data == []

    wait_for(lambda: client.videos.retrieve(remix.id).status in {"completed", "failed"}, 240, "the remix")
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
