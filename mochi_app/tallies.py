"""The job tallies kept in Redis: what each change of a job's status adds, in the transaction that writes it.

The web process and the workers are separate processes, often on separate hosts, so nothing is
counted in one process's memory: whoever changes a job's status adds to the tallies in the same
Redis transaction that writes the record (see JobStore), and any web process reads them back
(metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.client import Pipeline

from mochi_app.accounts import HUGGING_FACE_PREFIX, LOCAL_ACCOUNT
from mochi_app.guests import GUEST_PREFIX
from mochi_app.records import JobRecord, JobStatus

METRICS_KEY_PREFIX = "metrics:"
GIB = 1024**3
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# The GPUs Mochi runs on hold 24 to 141 GB; the buckets bracket the offload modes' footprints.
BYTES_BUCKETS = tuple(gib * GIB for gib in (1, 2, 4, 8, 16, 24, 32, 40, 48, 64, 80, 96, 128))
SUM_FIELD = "sum"
COUNT_FIELD = "count"  # also the +Inf bucket


def metrics_key(name: str) -> str:
    return f"{METRICS_KEY_PREFIX}{name}"


JOBS_TOTAL = "mochi_jobs_total"
GPU_SECONDS_TOTAL = "mochi_gpu_seconds_total"
GPU_SECONDS_KEY = metrics_key(GPU_SECONDS_TOTAL)  # a hash: account class -> seconds jobs held a worker
BUDGET_REFUSALS_TOTAL = "mochi_budget_refusals_total"  # counted by budgets.Budgets.check
# Actual over quoted run time: 1 is a perfect quote, 2 took twice as long as quoted.
RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)
REQUEUES_TOTAL = "mochi_job_requeues_total"
JOBS_KEY = metrics_key(JOBS_TOTAL)  # a hash: status -> jobs that reached it
REQUEUES_KEY = metrics_key(REQUEUES_TOTAL)  # a counter: RUNNING jobs put back on the queue


@dataclass(frozen=True, slots=True)
class JobHistogram:
    """A histogram held in the Redis hash `metrics:{name}`: one cumulative field per bucket, `sum` and `count`."""

    name: str
    documentation: str
    buckets: Sequence[float]
    reached: JobStatus  # observed when a job enters this status
    value: Callable[[JobRecord], float | None]  # None: nothing to observe for this job

    @property
    def key(self) -> str:
        return metrics_key(self.name)

    def observe(self, pipe: Pipeline, value: float) -> None:
        for bound in self.buckets:
            if value <= bound:
                pipe.hincrby(self.key, bucket_field(bound), 1)
        pipe.hincrby(self.key, COUNT_FIELD, 1)
        pipe.hincrbyfloat(self.key, SUM_FIELD, value)


HISTOGRAMS = (
    JobHistogram(
        "mochi_job_queue_wait_seconds",
        "Seconds from submit to a worker starting the job; observed each time a job starts.",
        SECONDS_BUCKETS,
        JobStatus.RUNNING,
        lambda record: record.timings.queue_wait_s,
    ),
    JobHistogram(
        "mochi_job_denoise_seconds",
        "Seconds of denoising per completed job.",
        SECONDS_BUCKETS,
        JobStatus.COMPLETED,
        lambda record: record.timings.denoise_s,
    ),
    JobHistogram(
        "mochi_job_decode_seconds",
        "Seconds of VAE decoding per completed job.",
        SECONDS_BUCKETS,
        JobStatus.COMPLETED,
        lambda record: record.timings.decode_s,
    ),
    JobHistogram(
        "mochi_job_total_seconds",
        "Seconds from submit to the finished video, per completed job.",
        SECONDS_BUCKETS,
        JobStatus.COMPLETED,
        lambda record: record.timings.total_s,
    ),
    JobHistogram(
        "mochi_quote_error_ratio",
        "Seconds a completed job ran over the seconds its quote predicted (1: exact).",
        RATIO_BUCKETS,
        JobStatus.COMPLETED,
        lambda record: record.run_s / record.quote.run_s if record.quote and record.quote.run_s > 0 else None,
    ),
    JobHistogram(
        "mochi_job_peak_gpu_memory_bytes",
        "Most CUDA memory the render held, per completed job on a GPU (none on a CPU).",
        BYTES_BUCKETS,
        JobStatus.COMPLETED,
        lambda record: record.peak_gpu_memory_bytes,
    ),
)


def record_change(pipe: Pipeline, before: JobStatus | None, after: JobRecord) -> None:
    """Count a job reaching a new status and observe its timings, inside the transaction that writes it.

    `before` is the status the stored record had (None for a new job). Only a change of status
    counts, so a transaction retried after it committed (its reply lost) counts nothing twice.
    PENDING counts submitted jobs; a job put back on the queue counts as a requeue instead.
    """
    if before is after.status:
        return
    if before is JobStatus.RUNNING and after.status is JobStatus.PENDING:
        pipe.incr(REQUEUES_KEY)
        return
    pipe.hincrby(JOBS_KEY, after.status.value, 1)
    if after.status.is_terminal and after.run_s > 0:
        pipe.hincrbyfloat(GPU_SECONDS_KEY, account_class(after.account_id), after.run_s)
    for histogram in HISTOGRAMS:
        value = histogram.value(after) if histogram.reached is after.status else None
        if value is not None:
            histogram.observe(pipe, value)


def account_class(account_id: str) -> str:
    """The metrics' label for whose a job is: guest, hugging_face, local or named."""
    if account_id.startswith(GUEST_PREFIX):
        return "guest"
    if account_id.startswith(HUGGING_FACE_PREFIX):
        return "hugging_face"
    return "local" if account_id == LOCAL_ACCOUNT else "named"


def bucket_field(bound: float) -> str:
    """A bucket's field in its histogram's hash, and its `le` label."""
    return repr(float(bound))
