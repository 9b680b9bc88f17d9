"""What the page shows: plain words for each state, and nobody's prompt can inject HTML."""

from __future__ import annotations

import time
import uuid

from mochi_app import cards
from mochi_app.public import JobPublic
from mochi_app.records import JobStatus, Progress, Timings
from mochi_app.schemas import GenerationRequest
from mochi_app.served_model import ServedModel


def job(status: JobStatus, **changes: object) -> JobPublic:
    request = GenerationRequest(prompt="a <b>bold</b> cat", seed=42)
    fields: dict[str, object] = {
        "job_id": str(uuid.uuid4()),
        "status": status,
        "request": request,
        "num_frames": 85,
        "duration_s": 2.83,
        "created_at": time.time(),
        "started_at": None,
        "finished_at": None,
        "progress": Progress(step=0, total=64),
        "queue_position": None,
        "eta_s": None,
        "timings": Timings(),
        "model": "tiny",
        "error": None,
        "output": None,
        "download_url": None,
    }
    return JobPublic.model_validate(fields | changes)


def test_prompts_and_errors_are_escaped() -> None:
    failed = job(JobStatus.FAILED, error="<script>alert(1)</script>")
    html = cards.status_card(failed) + cards.gallery_caption(failed)
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script>" not in html and "Failed: &lt;script&gt;" in html


def test_queue_position_and_progress_in_plain_words() -> None:
    assert "Queued: 2 jobs ahead." in cards.status_card(job(JobStatus.PENDING, queue_position=2))
    assert "Queued: 1 job ahead." in cards.status_card(job(JobStatus.PENDING, queue_position=1))
    assert "Queued: next in line." in cards.status_card(job(JobStatus.PENDING, queue_position=0))
    running = cards.status_card(job(JobStatus.RUNNING, progress=Progress(step=12, total=64), eta_s=130.0))
    assert "Step 12 of 64, about 2 min 10 s left." in running
    assert '<progress value="12" max="64">' in running


def test_the_player_appears_only_with_a_video() -> None:
    assert cards.player(job(JobStatus.RUNNING)) == ""
    done = job(JobStatus.COMPLETED, download_url="/download/abc")
    assert 'src="download/abc"' in cards.player(done) and "Download MP4" in cards.player(done)
    assert "<video" not in cards.gallery_media(done) and "Open to play" in cards.gallery_media(done)
    assert "No video" in cards.gallery_media(job(JobStatus.CANCELLED))


def test_a_finished_tile_shows_its_poster_as_an_image_not_a_video() -> None:
    done = job(JobStatus.COMPLETED, download_url="/download/abc", thumbnail_url="/thumbnail/abc")
    tile = cards.gallery_media(done)
    assert tile.startswith('<img class="thumb" src="thumbnail/abc"') and "<video" not in tile
    assert 'alt="a &lt;b&gt;bold&lt;/b&gt; cat"' in tile and 'loading="lazy"' in tile


def test_a_tile_shows_how_far_its_job_has_got_and_its_badge_once() -> None:
    running = job(JobStatus.RUNNING, progress=Progress(step=3, total=8), eta_s=20.0)
    assert "Step 3 of 8" in cards.gallery_media(running) and '<progress value="3" max="8">' in cards.gallery_media(
        running
    )
    assert "Queued: next in line" in cards.gallery_media(job(JobStatus.PENDING, queue_position=0))
    live = cards.gallery_media(running.model_copy(update={"preview_url": "/preview/abc?step=2"}))
    assert '<img src="preview/abc?step=2"' in live and "Step 3 of 8" in live and "<progress" in live
    assert "<img" not in cards.gallery_media(running)  # no preview made yet: the state alone
    for status in JobStatus:
        tile = cards.gallery_media(job(status)) + cards.gallery_caption(job(status))
        assert tile.count('class="badge') == 1, status


def test_labels() -> None:
    assert cards.frames_label(85, 30) == "85 frames = 2.8 s at 30 fps"
    assert cards.tokens_label(12, 256) == "12 / 256 tokens"
    assert "too long" in cards.tokens_label(300, 256)
    assert "once a worker has loaded the model" in cards.tokens_label(None, 256)
    assert "noise" in cards.model_banner(ServedModel(name="tiny", is_tiny=True, tokenizer_sha256="x"))
    assert "No worker has started yet" in cards.model_banner(None)


def test_a_running_card_shows_its_live_preview_and_an_ended_one_none() -> None:
    running = cards.status_card(job(JobStatus.RUNNING, preview_url="/preview/abc?step=6"))
    assert '<img class="preview" src="preview/abc?step=6"' in running
    assert "<img" not in cards.status_card(job(JobStatus.RUNNING)) + cards.status_card(job(JobStatus.COMPLETED))
