"""Bytes a browser fetches for one gallery page of six finished videos: the posters the tiles show now,
against the six `<video preload="metadata">` players they showed before, in one run with one Chromium.

Prints JSON. Usage: python -m benchmarks.gallery_weight [--runs 3] [--frames 31 --height 480 --width 848 --steps 4]
(the tiny model's random weights make noise, which compresses worse than a real model's video; 85 frames at this
size take over 20 GB in the tiny VAE's decode on a CPU)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from benchmarks._common import embedded_settings
from mochi_app.gallery import GALLERY_PAGE_SIZE
from tests.harness import start_web, start_worker

POSTERS_SHOWN = (
    "() => [...document.querySelectorAll('.video-tile img.thumb')].filter(img => img.complete).length === %d"
)
SETTLE_MS = 3000
PLAYERS_READY = "() => [...document.querySelectorAll('video')].every(video => video.readyState >= 1)"
# The gallery's tile before posters (cards.gallery_media at 8531b95), one per finished video.
OLD_TILE = '<video class="thumb" src="{src}" preload="metadata" muted loop playsinline controls></video>'


def render_six(url: str, shape: dict[str, int]) -> list[str]:
    """A gallery page of finished jobs, over REST; their ids."""
    ids = [
        httpx.post(f"{url}/generate", json={"prompt": f"a kite over the dunes {n}", **shape}, timeout=30).json()[
            "job_id"
        ]
        for n in range(GALLERY_PAGE_SIZE)
    ]
    for job_id in ids:
        while (status := httpx.get(f"{url}/status/{job_id}").json()["status"]) not in {"COMPLETED", "FAILED"}:
            time.sleep(0.5)
        assert status == "COMPLETED", status
    return ids


def route_of(url: str) -> str:
    """`download` or `thumbnail` for a stored file's route, else `other`."""
    path = urllib.parse.urlsplit(url).path
    return next((route for route in ("download", "thumbnail") if path.startswith(f"/{route}/")), "other")


def fetched_bytes(page: Page, load: Callable[[Page], object], settled: str) -> dict[str, int]:
    """Bytes received over the wire after `load(page)`, by route, until `settled` holds and a little after
    (a player may read on past its metadata). Chromium's own count (CDP), so that the range requests a
    player cancels once it has what it wants are counted too."""
    sizes: dict[str, int] = {}
    routes: dict[str, str] = {}
    session = page.context.new_cdp_session(page)
    session.on(
        "Network.requestWillBeSent",
        lambda event: routes.update({event["requestId"]: route_of(event["request"]["url"])}),
    )

    def count(event: dict[str, Any]) -> None:
        route = routes.get(event["requestId"], "other")
        sizes[route] = sizes.get(route, 0) + event["encodedDataLength"]

    session.on("Network.dataReceived", count)
    session.send("Network.enable")
    load(page)
    page.wait_for_function(settled, timeout=120_000)
    page.wait_for_timeout(SETTLE_MS)
    session.detach()
    return sizes


def measure(url: str, ids: list[str], runs: int) -> dict[str, object]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "apt-get install chromium"
    old_tiles = "".join(OLD_TILE.format(src=f"{url}/download/{job_id}") for job_id in ids)
    show_old = f"() => {{ document.body.innerHTML = {json.dumps(old_tiles)}; }}"
    posters, players, pages = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(runs):  # each in a fresh context: nothing cached from the run before
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            now = fetched_bytes(page, lambda tab: tab.goto(url), POSTERS_SHOWN % len(ids))
            posters.append(now.get("thumbnail", 0))
            pages.append(sum(now.values()))
            page.goto(f"{url}/healthz")  # same origin, no gallery: only the six players fetch
            before = fetched_bytes(page, lambda tab: tab.evaluate(show_old), PLAYERS_READY)
            players.append(before.get("download", 0))
            context.close()
        browser.close()
    poster_bytes, player_bytes = statistics.median(posters), statistics.median(players)
    return {
        "posters_bytes": poster_bytes,
        "players_metadata_bytes": player_bytes,
        "players_vs_posters": round(player_bytes / poster_bytes, 2),
        "whole_page_now_bytes": statistics.median(pages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=848)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    shape = {"num_frames": args.frames, "height": args.height, "width": args.width, "num_inference_steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="mochi-bench-") as tmp, embedded_settings(Path(tmp)) as settings:
        worker = start_worker(settings, Path(tmp) / "worker.log")
        web, url = start_web(settings, Path(tmp) / "web.log")
        try:
            figures = measure(url, render_six(url, shape), args.runs)
        finally:
            web.stop()
            worker.stop()
    print(json.dumps({"runs": args.runs, "shape": shape, **figures}, indent=2))


if __name__ == "__main__":
    main()
