"""GET /metrics: tallies kept in Redis by whoever changes a job, scraped with Prometheus' own parser."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus, Timings
from mochi_app.recovery import Recovery
from mochi_app.tallies import BYTES_BUCKETS, SECONDS_BUCKETS
from mochi_app.web import create_app
from tests.harness import Children, finished, free_port, new_account, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

TINIEST = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}
TIMINGS = ("queue_wait", "denoise", "decode", "total")
Scrape = dict[str, float]  # "name{label=value,...}" -> value


@pytest.fixture
def own_settings(settings: Settings, tmp_path: Path, children: Children) -> Settings:
    """The session's data (and tiny model) with a server of this test's own: no other test's jobs are counted."""
    return replace(settings, redis_url=children.queue_server(tmp_path / "redis"))


@pytest.fixture
def own_queue(own_settings: Settings) -> JobQueue:
    # No token counter: a prompt over the model's limit gets past the web and fails on the worker.
    return JobQueue(Redis.from_url(own_settings.redis_url or ""), own_settings)


def scrape(http: TestClient) -> Scrape:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Scrape = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{name}={value}" for name, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def moved(before: Scrape, after: Scrape, name: str) -> float:
    return after[name] - before[name]


def jobs(status: JobStatus) -> str:
    return f"mochi_jobs_total{{status={status}}}"


def buckets(samples: Scrape, histogram: str) -> list[float]:
    """The histogram's bucket counts, smallest bound first, +Inf last."""
    prefix = f"{histogram}_bucket{{le="
    found = {key[len(prefix) : -1]: value for key, value in samples.items() if key.startswith(prefix)}
    return [found[le] for le in sorted(found, key=float)]


def test_counters_and_histograms_move_by_exactly_the_jobs_that_ran(
    own_settings: Settings, own_queue: JobQueue, tmp_path: Path, children: Children
) -> None:
    with TestClient(create_app(own_settings), base_url="http://127.0.0.1") as http:
        before = scrape(http)
        assert before["mochi_live_workers{}"] == 0 and before["mochi_queue_depth{}"] == 0
        for histogram in (*(f"mochi_job_{phase}_seconds" for phase in TIMINGS), "mochi_job_peak_gpu_memory_bytes"):
            assert (
                len(buckets(before, histogram)) == len(BYTES_BUCKETS if "bytes" in histogram else SECONDS_BUCKETS) + 1
            )

        # Four jobs wait before any worker runs: two render, one fails on the worker, one is cancelled.
        owner = new_account()
        rendered = [own_queue.submit(owner, {"prompt": f"clip {n}", **TINIEST}) for n in range(2)]
        too_long = own_queue.submit(owner, {"prompt": "cat " * 300, **TINIEST})
        cancelled = own_queue.submit(owner, {"prompt": "never rendered", **TINIEST})
        own_queue.cancel(cancelled.job_id)
        waiting = scrape(http)
        assert (waiting["mochi_queue_depth{}"], waiting["mochi_live_workers{}"]) == (3, 0)
        assert moved(before, waiting, jobs(JobStatus.PENDING)) == 4
        assert moved(before, waiting, jobs(JobStatus.CANCELLED)) == 1

        children.worker(own_settings, tmp_path / "worker.log")
        ended = [finished(own_queue, record.job_id) for record in (*rendered, too_long, cancelled)]
        wait_for(lambda: scrape(http)["mochi_live_workers{}"] == 1, 60, "the worker to be counted")
        after = scrape(http)

    assert [record.status for record in ended] == [JobStatus.COMPLETED] * 2 + [JobStatus.FAILED, JobStatus.CANCELLED]
    assert {status: moved(before, after, jobs(status)) for status in JobStatus} == {
        JobStatus.PENDING: 4,
        JobStatus.RUNNING: 3,  # the cancelled job never started
        JobStatus.COMPLETED: 2,
        JobStatus.FAILED: 1,
        JobStatus.CANCELLED: 1,
    }
    gauges = ("mochi_queue_depth{}", "mochi_jobs_running{}", "mochi_job_requeues_total{}")
    assert [after[name] for name in gauges] == [0, 0, 0]

    # Queue wait is observed at each start; the rest once per completed job, from its record.
    started, completed = ended[:3], ended[:2]
    for phase in TIMINGS:
        histogram = f"mochi_job_{phase}_seconds"
        observed = started if phase == "queue_wait" else completed
        values = [getattr(record.timings, f"{phase}_s") for record in observed]
        assert moved(before, after, f"{histogram}_count{{}}") == len(observed), histogram
        assert moved(before, after, f"{histogram}_sum{{}}") == pytest.approx(sum(values)), histogram
        counts = buckets(after, histogram)
        assert counts == sorted(counts), f"{histogram} buckets are not cumulative: {counts}"
        assert counts[-1] == after[f"{histogram}_count{{}}"]
        covering = min(bound for bound in SECONDS_BUCKETS if bound >= max(values))
        assert moved(before, after, f"{histogram}_bucket{{le={float(covering)}}}") == len(observed), histogram

    # On a CPU no job has a GPU peak to observe.
    assert [record.peak_gpu_memory_bytes for record in ended] == [None] * 4
    assert after["mochi_job_peak_gpu_memory_bytes_count{}"] == 0


def test_each_status_change_counts_once_and_in_the_same_transaction(own_queue: JobQueue) -> None:
    store = own_queue.store
    record = own_queue.submit(new_account(), {"prompt": "by hand", **TINIEST})

    def start(current: JobRecord) -> JobRecord | None:
        if current.status is not JobStatus.PENDING:
            return None
        return current.model_copy(
            update={"status": JobStatus.RUNNING, "worker_id": "w", "timings": Timings(queue_wait_s=2.0)}
        )

    def complete(current: JobRecord) -> JobRecord | None:
        if current.status.is_terminal:
            return None
        timings = current.timings.model_copy(update={"denoise_s": 3.0, "decode_s": 0.5, "total_s": 6.0})
        return current.model_copy(
            update={"status": JobStatus.COMPLETED, "timings": timings, "finished_at": time.time()}
        )

    store.update(record.job_id, start)
    store.update(record.job_id, lambda current: current.model_copy(update={"progress": current.progress}))
    Recovery(own_queue).give_back(record.job_id, "w")  # back on the queue: a requeue, not a second submit
    store.update(record.job_id, start)
    store.update(record.job_id, complete)
    store.update(record.job_id, complete)  # a retried write that had already committed changes nothing

    redis = own_queue.redis
    assert {k.decode(): int(v) for k, v in redis.hgetall("metrics:mochi_jobs_total").items()} == {
        "PENDING": 1,
        "RUNNING": 2,
        "COMPLETED": 1,
    }
    assert int(redis.get("metrics:mochi_job_requeues_total") or 0) == 1

    def histogram(name: str, *fields: str) -> tuple[float, ...]:
        stored = {key.decode(): float(value) for key, value in redis.hgetall(f"metrics:{name}").items()}
        return tuple(stored.get(field, 0.0) for field in fields)

    # One cumulative field per bucket bound (absent while zero), then count (the +Inf bucket) and sum.
    assert histogram("mochi_job_queue_wait_seconds", "1.0", "2.5", "3600.0", "count", "sum") == (0, 2, 2, 2, 4.0)
    assert histogram("mochi_job_total_seconds", "5.0", "10.0", "count", "sum") == (0, 1, 1, 6.0)
    assert not redis.exists("metrics:mochi_job_peak_gpu_memory_bytes")


def test_metrics_answer_503_while_redis_is_away(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        response = http.get("/metrics")
    assert response.status_code == 503
    assert response.json() == {"detail": "the job queue is unreachable right now; try again in a moment"}
    assert response.headers["retry-after"] == "5"


def test_metrics_need_no_account_and_a_fresh_server_scrapes_as_zeros(own_settings: Settings) -> None:
    public = replace(own_settings, host="0.0.0.0", guests="off")  # where a request without a key acts for nobody
    with TestClient(create_app(public), base_url="http://127.0.0.1") as http:
        assert http.get(f"/status/{uuid.uuid4()}").status_code == 401
        response = http.get("/metrics")
        samples = scrape(http)
    assert response.status_code == 200
    assert {status: samples[jobs(status)] for status in JobStatus} == dict.fromkeys(JobStatus, 0.0)
    assert samples["mochi_job_total_seconds_count{}"] == 0
    # Aggregates only: no label could name an account or a job.
    labels = {
        family.name: {key for sample in family.samples for key in sample.labels}
        for family in text_string_to_metric_families(response.text)
    }
    assert set().union(*labels.values()) == {"status", "le"}
