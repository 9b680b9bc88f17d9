"""The Prometheus view of the service: the queue and the job tallies (tallies.py), read from Redis at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mochi_app.records import JobStatus
from mochi_app.tallies import (
    BUDGET_REFUSALS_TOTAL,
    COUNT_FIELD,
    GPU_SECONDS_KEY,
    GPU_SECONDS_TOTAL,
    HISTOGRAMS,
    JOBS_KEY,
    JOBS_TOTAL,
    REQUEUES_KEY,
    REQUEUES_TOTAL,
    SUM_FIELD,
    JobHistogram,
    bucket_field,
    metrics_key,
)

if TYPE_CHECKING:
    from mochi_app.queue import JobQueue


class ServiceCollector(Collector):
    """Reads the queue and the tallies from Redis at each scrape; a RedisError reaches the caller."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        depth, workers, running = self.queue.depth(), self.queue.live_workers(), self.queue.store.running_count()
        # One transaction: counters and histograms from the same moment.
        with self.queue.redis.pipeline() as pipe:
            pipe.hgetall(JOBS_KEY)
            pipe.get(REQUEUES_KEY)
            pipe.hgetall(GPU_SECONDS_KEY)
            pipe.get(metrics_key(BUDGET_REFUSALS_TOTAL))
            for histogram in HISTOGRAMS:
                pipe.hgetall(histogram.key)
            jobs, requeues, gpu_seconds, refusals, *histograms = pipe.execute()

        yield GaugeMetricFamily("mochi_queue_depth", "Jobs waiting on the queue.", value=depth)
        yield GaugeMetricFamily("mochi_live_workers", "Workers registered on the queue and alive.", value=workers)
        yield GaugeMetricFamily("mochi_jobs_running", "Jobs RUNNING now.", value=running)
        reached = CounterMetricFamily(
            JOBS_TOTAL,
            "Jobs that reached each status: PENDING once per submit, RUNNING once per start, each end once.",
            labels=["status"],
        )
        counts = _numbers(jobs)
        for status in JobStatus:
            reached.add_metric([status.value], counts.get(status.value, 0.0))
        yield reached
        yield CounterMetricFamily(
            REQUEUES_TOTAL,
            "RUNNING jobs put back on the queue: their worker was lost or stopping.",
            value=float(requeues or 0),
        )
        used = CounterMetricFamily(
            GPU_SECONDS_TOTAL,
            "Seconds jobs held a worker, by whose they were: guest, hugging_face, local or named.",
            labels=["account_class"],
        )
        for account_class, seconds in sorted(_numbers(gpu_seconds).items()):
            used.add_metric([account_class], seconds)
        yield used
        yield CounterMetricFamily(
            BUDGET_REFUSALS_TOTAL,
            "Submits refused because their quote was more than the account's GPU-second balance.",
            value=float(refusals or 0),
        )
        for histogram, fields in zip(HISTOGRAMS, histograms, strict=True):
            yield _family(histogram, _numbers(fields))


def _family(histogram: JobHistogram, fields: dict[str, float]) -> HistogramMetricFamily:
    count = fields.get(COUNT_FIELD, 0.0)
    buckets = [(bucket_field(bound), fields.get(bucket_field(bound), 0.0)) for bound in histogram.buckets]
    return HistogramMetricFamily(
        histogram.name,
        histogram.documentation,
        buckets=[*buckets, ("+Inf", count)],
        sum_value=fields.get(SUM_FIELD, 0.0),
    )


def _numbers(fields: dict[bytes | str, bytes | str]) -> dict[str, float]:
    return {(name.decode() if isinstance(name, bytes) else name): float(value) for name, value in fields.items()}


def create_registry(queue: JobQueue) -> CollectorRegistry:
    """A registry of this service's metrics alone, for one app; nothing touches Redis until a scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(queue))
    return registry
