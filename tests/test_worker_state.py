"""Workers' start-up states in Redis: published, refreshed, forgotten when they lapse, explained when none is ready."""

from __future__ import annotations

import time

from redis import Redis

from mochi_app import cards
from mochi_app.config import Settings
from mochi_app.stages import DownloadProgress, Stage
from mochi_app.worker_state import StartupReporter, WorkerState, WorkerStates, why_not_ready
from tests.harness import wait_for


def state(worker_id: str, stage: Stage, **fields: object) -> WorkerState:
    return WorkerState.model_validate({"worker_id": worker_id, "stage": stage, "updated_at": time.time(), **fields})


def test_states_are_kept_until_they_lapse(redis: Redis, settings: Settings) -> None:
    states = WorkerStates(redis, settings.queue_name, ttl_s=1)
    states.publish(state("host-1", Stage.LOADING, detail="reading the weights"))
    states.publish(state("host-2", Stage.FAILED, detail="no GPU"))
    assert [(s.worker_id, s.stage) for s in states.all()] == [("host-1", "loading"), ("host-2", "failed")]
    wait_for(lambda: [s.worker_id for s in states.all()] == ["host-2"], 60, "the live state to lapse")
    states.forget_failed("host")
    assert states.all() == []


def test_the_reporter_refreshes_its_state_until_it_stops(redis: Redis, settings: Settings) -> None:
    states = WorkerStates(redis, settings.queue_name, ttl_s=2)
    reporter = StartupReporter(states, "host-7")
    reporter.start()
    try:
        reporter(Stage.DOWNLOADING, "fetching x", DownloadProgress(done_bytes=5, total_bytes=10))
        first = states.all()[0].updated_at
        wait_for(lambda: states.all()[0].updated_at > first, 60, "a refresh")
        time.sleep(2.5)  # longer than the TTL: only the refresh keeps it
        assert [s.stage for s in states.all()] == [Stage.DOWNLOADING]
    finally:
        reporter.stop()
    assert states.all() == []


def test_a_failure_outlives_its_worker(redis: Redis, settings: Settings) -> None:
    states = WorkerStates(redis, settings.queue_name, ttl_s=2)
    reporter = StartupReporter(states, "host-8")
    reporter.start()
    reporter(Stage.FAILED, "the GPU is too old")
    reporter.stop()
    assert [(s.stage, s.detail) for s in states.all()] == [(Stage.FAILED, "the GPU is too old")]
    assert int(redis.ttl(f"worker-state:{settings.queue_name}:host-8")) > 3600


def test_why_no_worker_is_ready_names_the_newest_news() -> None:
    downloading = state("a-1", Stage.DOWNLOADING, detail="fetching m", download={"done_bytes": 1, "total_bytes": 4})
    failed = state("b-1", Stage.FAILED, detail="GPU 0 is visible, but torch cannot use it")
    assert why_not_ready([]) == "no worker has started yet"
    assert why_not_ready([failed]) == "no worker could start: GPU 0 is visible, but torch cannot use it"
    assert why_not_ready([failed, downloading]) == (
        "no worker is ready yet: downloading: fetching m (1 B of 4 B (25%))"
    )
    assert why_not_ready([failed, downloading, state("c-1", Stage.READY)]) is None


def test_the_banner_shows_download_progress_and_failures_until_a_worker_is_ready() -> None:
    progress = {"done_bytes": 12_300_000_000, "total_bytes": 40_100_000_000, "rate_bytes_per_s": 85e6, "eta_s": 330}
    downloading = state("a-1", Stage.DOWNLOADING, detail="fetching genmo/mochi-1-preview", download=progress)
    banner = cards.model_banner(None, [downloading])
    assert "A worker is starting: downloading the model." in banner
    assert '<progress value="12300000000" max="40100000000">' in banner
    assert "12.3 GB of 40.1 GB (31%), 85.0 MB/s, about 6 min left" in banner
    failed = cards.model_banner(None, [state("b-1", Stage.FAILED, detail="torch <b>cannot</b> use it")])
    assert "No worker could start. Torch &lt;b&gt;cannot&lt;/b&gt; use it." in failed
    assert "No worker has started yet" in cards.model_banner(None, [])
