"""The page in a real browser: Debian's Chromium, driven by Playwright, against `python app.py`."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from tests.conftest import REPO, SMALL, RunningApp, start_web, wait_for

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
# Long enough on the tiny model (a few seconds of denoising) for the page to show the steps moving.
WATCHABLE = {"Frames": "61", "Width (px)": "256", "Height (px)": "256", "Denoising steps": "80"}


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
def page(browser: Browser, studio_app: RunningApp) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(studio_app.url)
    yield page
    page.close()


def job_card_text(page: Page) -> str:
    return page.locator(".job-card").inner_text()


def test_prompt_to_video_with_live_progress(page: Page) -> None:
    page.get_by_label("Prompt", exact=True).fill("a red fox trots through fresh snow at dawn")
    page.get_by_text("Advanced").click()
    for label, value in WATCHABLE.items():
        box = page.get_by_label(f"number input for {label}", exact=True)
        box.fill(value)
        box.press("Enter")
    page.get_by_role("button", name="Generate").click()

    steps_seen: set[int] = set()
    deadline = time.monotonic() + 120
    while "Done in" not in (text := job_card_text(page)):
        assert "Failed" not in text, text
        assert time.monotonic() < deadline, f"the job did not finish; the card says: {text}"
        steps_seen.update(int(step) for step in re.findall(r"Step (\d+) of 80", text))
        time.sleep(0.1)
    assert len(steps_seen - {0, 80}) >= 2, f"progress did not move on the page: saw steps {sorted(steps_seen)}"

    player = page.locator("video.player")
    player.wait_for()
    page.wait_for_function("() => document.querySelector('video.player').readyState >= 1", timeout=30_000)
    assert player.evaluate("video => video.duration") > 1.9  # 61 frames at 30 fps, decoded by Chromium
    gallery_item = page.locator(".gallery-item").first
    gallery_item.locator("video.thumb").wait_for()
    assert "a red fox trots through fresh snow" in gallery_item.inner_text()
    assert "COMPLETED" in gallery_item.inner_text()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "studio.png", full_page=True)
    assert (ARTIFACTS / "studio.png").stat().st_size > 10_000


def test_a_bad_request_shows_a_message_not_a_traceback(page: Page) -> None:
    page.get_by_label("Prompt", exact=True).fill("   ")
    page.get_by_role("button", name="Generate").click()
    toast = page.get_by_text("prompt must not be empty")
    toast.wait_for(timeout=15_000)
    assert "Traceback" not in page.content()


def test_remix_loads_a_jobs_parameters_into_the_form(page: Page, studio_app: RunningApp) -> None:
    params = {"prompt": "a heron lands on a pond", **SMALL, "seed": 1234}
    httpx.post(f"{studio_app.url}/generate", json=params).raise_for_status()
    page.reload()
    item = page.locator(".gallery-item").first
    item.get_by_text(params["prompt"]).wait_for(timeout=15_000)
    item.get_by_role("button", name="Remix").click()
    prompt_box = page.get_by_label("Prompt", exact=True)
    wait_for(lambda: prompt_box.input_value() == params["prompt"], 15, "the remixed prompt in the form")
    page.get_by_text("Advanced").click()
    assert not page.get_by_label("Random seed").is_checked()
    assert page.get_by_label("Seed", exact=True).input_value() == "1234"
    assert page.get_by_label("number input for Frames", exact=True).input_value() == str(SMALL["num_frames"])


@pytest.fixture(scope="module")
def public_web(data_dir: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web process with guest accounts on, as on a public address."""
    settings = Settings(data_dir=data_dir, redis_url=redis_url, guests="on", queue_name=f"b-{uuid.uuid4().hex[:8]}")
    child, url = start_web(settings, tmp_path_factory.mktemp("public") / "web.log")
    yield url
    child.stop()


def test_a_guest_signs_in_with_a_key_and_out_again(browser: Browser, public_web: str, redis_url: str) -> None:
    name = f"carol-{uuid.uuid4().hex[:6]}"
    _, key = AccountStore(Redis.from_url(redis_url)).create(name)
    page = browser.new_page()
    page.goto(public_web)
    page.get_by_text("You are a guest").wait_for(timeout=15_000)
    page.get_by_role("button", name="Sign in with an API key").click()
    page.get_by_label("API key").fill("mochi_not_a_real_key")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text("that API key is not valid").wait_for(timeout=15_000)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=15_000)
    page.get_by_role("button", name="Sign in with an API key").click()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are a guest").wait_for(timeout=15_000)
    page.close()
