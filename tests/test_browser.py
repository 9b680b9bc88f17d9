"""The page in a real browser: Debian's Chromium, driven by Playwright, against `python app.py`."""

from __future__ import annotations

import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Response, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.ui import TITLE
from tests.harness import (
    REPO,
    SMALL,
    Child,
    Children,
    RunningApp,
    free_port,
    newcomer_env,
    start_web,
    wait_for,
    worker_env,
)
from tests.hub_server import serve_hub
from tests.s3_servers import start_s3_server
from tests.test_gpus import FAKE_H100, fake_nvidia_smi
from tests.test_real_path import first_start_env

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
# Long enough on the tiny model (a few seconds of denoising) for the page to show the steps moving.
# The tiny repo's bf16 files (about 1.8 MB) take about 12 s at this rate: time to see the banner move.
SLOW_HUB_BYTES_PER_S = 150_000
WATCHABLE = {"Frames": "61", "Width (px)": "256", "Height (px)": "256", "Denoising steps": "80"}
# SMALL's settings, as the page's Advanced controls name them: a quick job that still makes a video to seek in.
QUICK = {
    "Frames": str(SMALL["num_frames"]),
    "Width (px)": str(SMALL["width"]),
    "Height (px)": str(SMALL["height"]),
    "Denoising steps": str(SMALL["num_inference_steps"]),
}
# The job card's live preview while it runs: its src (which names the step), and whether it has loaded.
PREVIEW_SHOWN = """() => {
    const img = document.querySelector('.job-card img.preview');
    return img && { src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0 };
}"""
# The gallery's running tile shows the same live preview, loaded, with the step over it.
TILE_PREVIEW_SHOWN = "() => document.querySelector('.video-tile .thumb.live img')?.naturalWidth > 0"
# A finished tile's poster has loaded: an image, not a player (the player loads only on Open).
POSTER_SHOWN = "() => document.querySelector('.video-tile img.thumb')?.naturalWidth > 0"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (.ci/run does this)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def blank_page(browser: Browser) -> Iterator[Page]:
    """A new tab, closed when the test ends."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield page
    page.close()


@pytest.fixture
def page(blank_page: Page, studio_app: RunningApp) -> Page:
    """A tab on the shared studio's page."""
    blank_page.goto(studio_app.url)
    return blank_page


def job_card_text(page: Page) -> str:
    return page.locator(".job-card").inner_text()


def submit_prompt(page: Page, prompt: str, advanced: dict[str, str]) -> None:
    """Type the prompt, set the Advanced controls by their labels, and press Generate."""
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_text("Advanced").click()
    for label, value in advanced.items():
        box = page.get_by_label(f"number input for {label}", exact=True)
        box.fill(value)
        box.press("Enter")
    page.get_by_role("button", name="Generate").click()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.mark.timeout(600)  # 80 steps on a CPU: a minute idle, several on a loaded machine
def test_prompt_to_video_with_live_progress(page: Page) -> None:
    submit_prompt(page, "a red fox trots through fresh snow at dawn", WATCHABLE)

    steps_seen: set[int] = set()
    previews_seen: dict[str, bool] = {}  # each preview's src, and whether it was seen loaded
    tile_preview_seen = False
    deadline = time.monotonic() + 480  # a bound for a failure only: the loop ends when the card says "Done in"
    while "Done in" not in (text := job_card_text(page)):
        assert "Failed" not in text, text
        assert time.monotonic() < deadline, f"the job did not finish; the card says: {text}"
        steps_seen.update(int(step) for step in re.findall(r"Step (\d+) of 80", text))
        if (shown := page.evaluate(PREVIEW_SHOWN)) is not None:
            if shown["loaded"] and not any(previews_seen.values()):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=ARTIFACTS / "preview-desktop.png")
            previews_seen[shown["src"]] = previews_seen.get(shown["src"], False) or shown["loaded"]
        tile_preview_seen = tile_preview_seen or page.evaluate(TILE_PREVIEW_SHOWN)
        time.sleep(0.1)
    assert len(steps_seen - {0, 80}) >= 2, f"progress did not move on the page: saw steps {sorted(steps_seen)}"
    assert len(previews_seen) >= 2 and any(previews_seen.values()), f"the preview did not change: {previews_seen}"
    assert tile_preview_seen, "the gallery's running tile never showed the live preview"

    player = page.locator("video.player")
    player.wait_for()
    page.wait_for_function("() => document.querySelector('video.player').readyState >= 1", timeout=30_000)
    assert player.evaluate("video => video.duration") > 1.9  # 61 frames at 30 fps, decoded by Chromium
    gallery_item = page.locator(".video-tile").first
    poster = gallery_item.locator("img.thumb")
    page.wait_for_function(POSTER_SHOWN)
    assert poster.evaluate("img => img.naturalWidth") == 256  # WATCHABLE's width: under the poster's 320 px cap
    assert page.locator(".gallery-grid video").count() == 0  # the player loads only on Open
    assert "a red fox trots through fresh snow" in gallery_item.inner_text()
    assert "COMPLETED" in gallery_item.inner_text()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "studio.png", full_page=True)
    assert (ARTIFACTS / "studio.png").stat().st_size > 10_000


# Pauses the player, seeks it to half its length and resolves once it has `seeked` there (rejects on an error).
SEEK_TO_THE_MIDDLE = """async video => {
    video.pause();
    const target = video.duration / 2;
    await new Promise((resolve, reject) => {
        const bound = setTimeout(() => reject(new Error("no seeked event in 30 s")), 30000);
        const settle = (done) => () => { clearTimeout(bound); done(); };
        video.addEventListener("seeked", settle(resolve), { once: true });
        video.addEventListener("error", settle(() => reject(new Error(video.error.message))), { once: true });
        video.currentTime = target;
    });
    return { target, currentTime: video.currentTime, error: video.error && video.error.message };
}"""
PLAYER_HAS_ITS_LENGTH = """() => {
    const video = document.querySelector("video.player");
    return video !== null && video.readyState >= 1 && Number.isFinite(video.duration) && video.duration > 0;
}"""


@pytest.mark.timeout(600)
def test_the_page_plays_and_seeks_a_video_kept_in_an_object_store(
    blank_page: Page, tmp_path: Path, children: Children
) -> None:
    """The player follows /download's 307 to a presigned link on the store, and the store's answers to
    Chromium's range requests are enough to read the video's length and seek in it."""
    bucket = f"studio-{uuid.uuid4().hex[:12]}"
    server = start_s3_server("nanio", tmp_path / "s3", bucket=bucket)
    children.defer(server.stop)
    app = children.app(tmp_path, MOCHI_STORAGE_URL=f"s3://{bucket}/videos", **server.env())
    page = blank_page
    seen: list[tuple[str, str, int]] = []  # (origin, path, status) of every answer, redirects included

    def record(response: Response) -> None:
        seen.append((origin(response.url), urlsplit(response.url).path, response.status))

    page.on("response", record)
    page.goto(app.url)

    submit_prompt(page, "a kingfisher dives into a still river", QUICK)
    player = page.locator("video.player")
    player.wait_for(timeout=300_000)
    assert "Done in" in job_card_text(page)
    src = player.get_attribute("src")
    assert src is not None and src.startswith("download/"), src
    job_id = src.removeprefix("download/")

    page.wait_for_function(PLAYER_HAS_ITS_LENGTH, timeout=60_000)
    duration = player.evaluate("video => video.duration")
    seek = player.evaluate(SEEK_TO_THE_MIDDLE)
    assert seek["error"] is None, seek
    assert abs(seek["currentTime"] - duration / 2) < 0.1, (duration, seek)
    assert player.evaluate("video => video.error") is None
    page.wait_for_function(POSTER_SHOWN, timeout=60_000)  # the gallery's tile, from the store too

    store = origin(server.endpoint_url)
    assert (origin(app.url), f"/download/{job_id}", 307) in seen, seen
    assert (origin(app.url), f"/thumbnail/{job_id}", 307) in seen, seen
    from_store = [status for where, path, status in seen if where == store and path.startswith(f"/{bucket}/videos/")]
    assert from_store and set(from_store) <= {200, 206}, seen
    assert any(job_id in path for where, path, _ in seen if where == store), seen

    assert list(app.data_dir.rglob("*.mp4")) == []
    listed = server.client().list_objects_v2(Bucket=bucket)
    kept = [item["Key"] for item in listed.get("Contents", []) if not item["Key"].startswith("videos/snapshots/")]
    video, poster = sorted(kept) if len(kept) == 2 else (None, None)
    assert video is not None and video.startswith("videos/") and video.endswith(".mp4") and job_id in video, kept
    assert poster == video.removesuffix(".mp4") + ".webp", kept

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "studio-object-store.png", full_page=True)


def test_a_bad_request_shows_a_message_and_marks_its_field_not_another(page: Page) -> None:
    page.get_by_label("Prompt", exact=True).fill("   ")
    page.get_by_role("button", name="Generate").click()
    # The quote above Generate may say so too: the toast is the message the click must bring
    toast = page.get_by_test_id("toast-text").filter(has_text="prompt must not be empty")
    toast.wait_for(timeout=60_000)
    page.locator(".invalid", has=page.get_by_label("Prompt", exact=True)).wait_for(timeout=30_000)
    assert page.locator(".invalid").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=ARTIFACTS / "field-error.png")
    page.get_by_text("Advanced").click()
    seed_block = page.locator(".block", has=page.get_by_label("Seed", exact=True)).last
    assert "Error" not in seed_block.inner_text()  # the submit's outputs are not what was wrong
    assert "Traceback" not in page.content()
    page.get_by_label("Prompt", exact=True).fill("a fox")
    page.wait_for_function("() => document.querySelectorAll('.invalid').length === 0", timeout=30_000)


def test_a_size_mochi_cannot_render_snaps_and_says_so(page: Page) -> None:
    page.get_by_text("Advanced").click()
    height = page.get_by_label("number input for Height (px)", exact=True)
    height.fill("1000")
    height.press("Enter")
    page.get_by_test_id("toast-text").filter(has_text="The height is a multiple of 16 px: 1000 set to 992").wait_for(
        timeout=30_000
    )
    wait_for(lambda: height.input_value() == "992", 30, "the snapped height")
    frames = page.get_by_label("number input for Frames", exact=True)
    frames.fill("50")
    frames.press("Enter")
    page.get_by_test_id("toast-text").filter(has_text="50 frames set to 49").wait_for(timeout=30_000)
    wait_for(lambda: frames.input_value() == "49", 30, "the snapped frames")


def test_remix_loads_a_jobs_parameters_into_the_form(page: Page, studio_app: RunningApp) -> None:
    params = {"prompt": "a heron lands on a pond", **SMALL, "seed": 1234}
    httpx.post(f"{studio_app.url}/generate", json=params).raise_for_status()
    page.reload()
    item = page.locator(".video-tile").first
    item.get_by_text(params["prompt"]).wait_for(timeout=60_000)
    item.get_by_role("button", name="Remix").click()
    prompt_box = page.get_by_label("Prompt", exact=True)
    wait_for(lambda: prompt_box.input_value() == params["prompt"], 60, "the remixed prompt in the form")
    page.get_by_text("Advanced").click()
    assert not page.get_by_label("Random seed").is_checked()
    assert page.get_by_label("Seed", exact=True).input_value() == "1234"
    assert page.get_by_label("number input for Frames", exact=True).input_value() == str(SMALL["num_frames"])


def finished_jobs(url: str, prompts: list[str]) -> list[str]:
    """Submit one SMALL job per prompt over REST and return their ids once all have COMPLETED."""
    ids = [httpx.post(f"{url}/generate", json={"prompt": prompt, **SMALL}).json()["job_id"] for prompt in prompts]

    def all_done() -> bool:
        return all(httpx.get(f"{url}/status/{job_id}").json()["status"] == "COMPLETED" for job_id in ids)

    wait_for(all_done, 240, "the gallery's finished jobs", interval_s=0.5)
    return ids


def tile(page: Page, index: int) -> Locator:
    return page.locator(".video-tile").nth(index)


def card_shows(page: Page, job_id: str) -> None:
    """Waits until the job card follows `job_id` (it shows the id's first eight characters)."""
    page.locator(".job-card code", has_text=job_id[:8]).wait_for(timeout=30_000)


SCREENS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 1000}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(params=list(SCREENS))
def screen_page(browser: Browser, studio_app: RunningApp, request: pytest.FixtureRequest) -> Iterator[Page]:
    """The studio's page on a desktop and on a 390 x 844 phone."""
    page = browser.new_page(**SCREENS[request.param])
    page.goto(studio_app.url)
    yield page
    page.close()


@pytest.mark.timeout(600)
def test_the_gallery_keeps_its_tiles_and_every_click_while_a_job_runs(
    screen_page: Page, studio_app: RunningApp, request: pytest.FixtureRequest
) -> None:
    page = screen_page
    log_before = len(studio_app.child.log)
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    done = finished_jobs(studio_app.url, [f"a finished clip {n}" for n in range(3)])[::-1]  # newest first
    # Two long renders: one runs while the tiles are clicked, one waits behind it (a worker takes one at a time).
    long_job = {"prompt": "a long render to click around", "num_frames": 85, "height": 256, "width": 256,
                "num_inference_steps": 100}  # fmt: skip
    running = httpx.post(f"{studio_app.url}/generate", json=long_job).json()["job_id"]
    waiting = httpx.post(f"{studio_app.url}/generate", json={**long_job, "prompt": "a render that waits"}).json()
    page.reload()
    tile(page, 1).get_by_text("Step ").wait_for(timeout=120_000)  # the first long job's tile, running
    page.evaluate("() => document.querySelectorAll('img.thumb').forEach(poster => { poster.kept = true; })")
    steps_seen: set[int] = set()
    lost: list[int] = []
    for click in range(12):
        index = 2 + click % 3  # the finished tiles, behind the two long jobs
        tile(page, index).get_by_role("button", name="Open").click()
        try:
            card_shows(page, done[index - 2])
        except PlaywrightTimeoutError:
            lost.append(click)
        steps_seen.update(int(step) for step in re.findall(r"Step (\d+) of 100", tile(page, 1).inner_text()))
    tile(page, 3).get_by_role("button", name="Remix").click()
    prompt_box = page.get_by_label("Prompt", exact=True)
    wait_for(lambda: prompt_box.input_value() == "a finished clip 1", 60, "the remixed prompt")
    assert lost == [], f"clicks that did nothing: {lost}"
    assert len(steps_seen) >= 2, f"the running tile did not move: saw steps {sorted(steps_seen)}"
    kept = page.evaluate("() => [...document.querySelectorAll('img.thumb')].map(poster => poster.kept === true)")
    assert kept and all(kept), f"posters replaced while the job ran: {kept}"

    # The waiting one (or, on a quick machine, running: its denoising alone outlasts the clicks) is cancelled.
    tile(page, 0).get_by_role("button", name="Cancel").click()
    tile(page, 0).get_by_text("CANCELLED").wait_for(timeout=240_000)
    tile(page, 0).get_by_role("button", name="Delete").click()  # the first click only asks again
    tile(page, 0).get_by_role("button", name="Click again to delete").click()
    tile(page, 0).get_by_text("a long render to click around").wait_for(timeout=30_000)  # the cancelled one is gone
    assert httpx.get(f"{studio_app.url}/status/{waiting['job_id']}").status_code == 404
    httpx.post(f"{studio_app.url}/cancel/{running}")  # the next test's jobs need not wait behind it

    ARTIFACTS.mkdir(exist_ok=True)
    screen = request.node.callspec.params["screen_page"]
    page.screenshot(path=ARTIFACTS / ("gallery-desktop.png" if screen == "desktop" else "gallery-clicks-phone.png"))
    log = studio_app.child.log[log_before:]
    assert "Traceback" not in log and "KeyError" not in log, log[-3000:]
    assert not [error for error in console_errors if "Could not parse" in error or "500" in error], console_errors


@pytest.mark.timeout(600)
def test_a_seed_sweep_shows_a_contact_sheet_and_make_final_keeps_the_seed(page: Page, studio_app: RunningApp) -> None:
    log_before = len(studio_app.child.log)
    page.get_by_label("Prompt", exact=True).fill("a kite over the dunes, four ways")
    page.get_by_text("Advanced").click()
    for label, value in {**QUICK, "Seeds to try": "3"}.items():
        box = page.get_by_label(f"number input for {label}", exact=True)
        box.fill(value)
        box.press("Enter")
    page.get_by_label("Random seed").uncheck()
    page.get_by_label("Seed", exact=True).fill("500")
    page.get_by_role("button", name=re.compile(r"^Sweep 3 seeds · about ")).click()
    sheet = page.locator(".contact-sheet")
    sheet.get_by_text("Seed sweep: 3 seeds").wait_for(timeout=60_000)
    assert [sheet.locator(".sheet-tile").nth(n).locator(".caption .prompt").inner_text() for n in range(3)] == [
        "Seed 500", "Seed 501", "Seed 502"
    ]  # fmt: skip
    sheet.get_by_text("Seed sweep: 3 seeds, all ended").wait_for(timeout=240_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.sheet-tile img.thumb')].filter(p => p.naturalWidth > 0).length === 3",
        timeout=60_000,
    )
    in_view = (
        "() => { const box = document.querySelector('.contact-sheet').getBoundingClientRect();"
        " return box.top < window.innerHeight && box.bottom > 0; }"
    )
    assert page.evaluate(in_view)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "sweep-desktop.png", full_page=True)
    sheet.locator(".sheet-tile").nth(1).get_by_role("button", name="Make final").click()
    page.locator(".job-card", has_text="seed 501").filter(has_text="100 steps").wait_for(timeout=30_000)
    final = page.locator(".job-card code").inner_text()
    jobs = httpx.get(f"{studio_app.url}/jobs/local", params={"limit": 5}).json()["jobs"]
    made = next(job for job in jobs if job["job_id"].startswith(final))
    assert (made["request"]["seed"], made["request"]["num_inference_steps"], made["batch_id"]) == (501, 100, None)
    httpx.post(f"{studio_app.url}/cancel/{made['job_id']}")
    log = studio_app.child.log[log_before:]
    assert "Traceback" not in log, log[-3000:]


def test_a_first_view_counts_both_prompts_and_an_example_fills_the_prompt(page: Page) -> None:
    page.get_by_text("0 / 256 tokens").nth(1).wait_for(timeout=30_000)  # the prompt's and the negative's
    assert "appears once a worker" not in page.content()
    page.get_by_text("Waves roll onto a black sand beach").first.click()
    prompt_box = page.get_by_label("Prompt", exact=True)
    wait_for(lambda: prompt_box.input_value().startswith("Waves roll"), 30, "the example in the prompt box")
    page.get_by_text(re.compile(r"^[1-9]\d* / 256 tokens$")).first.wait_for(timeout=30_000)
    page.get_by_text("Portrait 480x848").click()
    page.get_by_text("Advanced").click()
    width = page.get_by_label("number input for Width (px)", exact=True)
    wait_for(lambda: width.input_value() == "480", 30, "the portrait width")
    assert page.get_by_label("number input for Height (px)", exact=True).input_value() == "848"
    page.get_by_text(re.compile(r"^Draft · about ")).wait_for(timeout=30_000)


@pytest.mark.timeout(600)
def test_on_a_phone_the_card_comes_into_view_after_generate_and_open(browser: Browser, studio_app: RunningApp) -> None:
    finished_jobs(studio_app.url, ["a clip to open on a phone"])
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone.goto(studio_app.url)
        in_view = (
            "() => { const box = document.querySelector('.job-card').getBoundingClientRect();"
            " return box.top > -2 && box.top < window.innerHeight; }"
        )  # fmt: skip (a scrolled-to top may be -0.2)
        tile(phone, 0).get_by_role("button", name="Open").scroll_into_view_if_needed()
        tile(phone, 0).get_by_role("button", name="Open").click()
        phone.wait_for_function(in_view, timeout=30_000)
        width = phone.evaluate("() => document.querySelector('.video-tile').getBoundingClientRect().width")
        assert width > 300, f"a tile is {width} px wide on a 390 px screen: not one column"
        phone.evaluate("() => window.scrollTo(0, 0)")
        submit_prompt(phone, "a phone's own clip", WATCHABLE)  # long enough to see its live preview
        phone.locator(".job-card", has_text="a phone's own clip").wait_for(timeout=30_000)
        phone.wait_for_function(in_view, timeout=30_000)
        preview_fits = (
            "() => { const img = document.querySelector('.job-card img.preview');"
            " return img && img.naturalWidth > 0 && img.getBoundingClientRect().right <= window.innerWidth; }"
        )
        phone.wait_for_function(preview_fits, timeout=120_000)
        ARTIFACTS.mkdir(exist_ok=True)
        phone.evaluate("() => document.querySelector('.job-card').scrollIntoView({block: 'start'})")
        phone.screenshot(path=ARTIFACTS / "preview-phone.png")
        phone.locator(".job-card", has_text="Done in").wait_for(timeout=240_000)
        phone.screenshot(path=ARTIFACTS / "gallery-phone.png", full_page=True)
    finally:
        phone.close()


@pytest.fixture(scope="module")
def public_web(data_dir: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web process with guest accounts on, as on a public address."""
    settings = Settings(data_dir=data_dir, redis_url=redis_url, guests="on", queue_name=f"b-{uuid.uuid4().hex[:8]}")
    child, url = start_web(settings, tmp_path_factory.mktemp("public") / "web.log")
    yield url
    child.stop()


def test_a_guest_signs_in_with_a_key_and_out_again(blank_page: Page, public_web: str, redis_url: str) -> None:
    name = f"carol-{uuid.uuid4().hex[:6]}"
    _, key = AccountStore(Redis.from_url(redis_url)).create(name)
    page = blank_page
    page.goto(public_web)
    page.get_by_text("You are a guest").wait_for(timeout=60_000)
    page.get_by_role("button", name="Sign in with an API key").click()
    page.get_by_label("API key").fill("mochi_not_a_real_key")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text("that API key is not valid").wait_for(timeout=60_000)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)
    page.get_by_role("button", name="Sign in with an API key").click()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are a guest").wait_for(timeout=60_000)


def test_a_first_start_shows_each_stage_with_download_progress(
    blank_page: Page, settings: Settings, hub_repo: Path, tmp_path: Path, children: Children
) -> None:
    """The page and /healthz while a worker fetches the model from a (loopback) hub, loads it and warms up.

    The page is open before the worker exists, as on a first start, where the browser is often quicker than the
    worker's imports: it must see the worker arrive without a reload.
    """
    with serve_hub(hub_repo, bytes_per_s=SLOW_HUB_BYTES_PER_S) as hub:
        _, url = children.web(settings, tmp_path / "web.log")
        page = blank_page
        page.goto(url)
        page.get_by_text("No worker has started yet").wait_for(timeout=30_000)
        env = worker_env(settings, **first_start_env(hub.endpoint, tmp_path / "hf"))
        children.launch([sys.executable, "-m", "mochi_app", "worker"], env, tmp_path / "worker.log")
        banner = page.locator(".banner.starting")
        banner.get_by_text("A worker is starting: downloading the model.").wait_for(timeout=120_000)
        page.locator(".banner.starting progress").wait_for()
        wait_for(lambda: " of " in banner.inner_text(), 60, "the downloaded bytes on the banner")
        health = httpx.get(f"{url}/healthz").json()
        assert health["status"] == "degraded"
        assert health["detail"].startswith("no worker is ready yet: downloading: fetching genmo/mochi-1-preview")
        assert health["workers"][0]["download"]["total_bytes"] > 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "first-start-downloading.png")
        page.get_by_text("Model: genmo/mochi-1-preview").wait_for(timeout=120_000)
        assert page.locator(".banner.starting").count() == 0
        assert httpx.get(f"{url}/healthz").json()["detail"] is None


def test_app_py_on_a_gpu_torch_cannot_use_says_why_on_the_console_the_page_and_healthz(
    blank_page: Page, tmp_path: Path, children: Children
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = newcomer_env(tmp_path / "data", port, **fake_nvidia_smi(tmp_path, FAKE_H100))

    def explained(child: Child) -> bool:
        try:
            health = httpx.get(f"{url}/healthz", timeout=2).json()
        except httpx.HTTPError:
            return False
        return "not restarting it" in child.log and "no worker could start" in (health.get("detail") or "")

    app = children.child([sys.executable, "app.py"], env, tmp_path / "app.log", explained)
    page = blank_page
    health = httpx.get(f"{url}/healthz").json()
    assert (health["status"], health["live_workers"], health["workers"][0]["stage"]) == ("degraded", 0, "failed")
    assert "GPU 0 (NVIDIA H100 80GB HBM3, driver 470.82.01) is visible, but torch 2.13.0" in health["detail"]
    assert "worker cannot start: GPU 0 (NVIDIA H100 80GB HBM3, driver 470.82.01) is visible" in app.log
    assert "Traceback" not in app.log
    page.goto(url)
    banner = page.locator(".banner.error")
    banner.wait_for(timeout=30_000)
    text = banner.inner_text()
    assert "No worker could start. GPU 0 (NVIDIA H100 80GB HBM3, driver 470.82.01) is visible" in text
    assert "set MOCHI_MODEL=tiny to try the studio without a GPU" in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "gpu-unusable.png")


def test_the_api_docs_render_with_no_network_beyond_the_studio(blank_page: Page, studio_app: RunningApp) -> None:
    """Swagger UI draws the OpenAPI 3.1 document FastAPI writes, every byte from this server."""
    page = blank_page
    elsewhere: list[str] = []

    def goes_elsewhere(url: str) -> bool:  # blob: and data: URLs are the page's own bytes
        return url.startswith(("http:", "https:")) and not url.startswith(studio_app.url)

    page.on("request", lambda request: elsewhere.append(request.url) if goes_elsewhere(request.url) else None)
    page.goto(f"{studio_app.url}/docs")
    page.locator(".swagger-ui .info .title").get_by_text(TITLE).wait_for(timeout=60_000)
    page.locator(".opblock-summary-path", has_text="/generate").first.wait_for(timeout=60_000)
    assert elsewhere == []
