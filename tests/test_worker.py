"""A real worker process on the tiny model, fed through RQ on a real Valkey server."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import imageio.v2 as imageio
import pytest
from redis import Redis
from rq.timeouts import JobTimeoutException

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.renderer import NO_CHECKPOINTS, Checkpointing, Rendering, StepCallback
from mochi_app.runner import JobRunner
from mochi_app.schemas import GenerationRequest
from mochi_app.storage import open_storage
from mochi_app.tokens import TokenCounter
from mochi_app.video import job_videos, poster_of
from tests.harness import SLOW, SMALL, Child, Children, finished, new_account, wait_for

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


def watch_statuses(queue: JobQueue, job_id: str, timeout_s: float = 120) -> list[JobStatus]:
    """Every distinct status the record passes through, in order, until it ends."""
    seen: list[JobStatus] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = queue.store.get(job_id)
        assert record is not None
        if not seen or seen[-1] is not record.status:
            seen.append(record.status)
        if record.status.is_terminal:
            return seen
        time.sleep(0.005)
    raise AssertionError(f"job {job_id} still {seen[-1]} after {timeout_s} s")


def test_a_prompt_becomes_an_mp4(worker: Child, worker_queue: JobQueue) -> None:
    record = worker_queue.submit(new_account(), {"prompt": "a cat walks on the beach", **SMALL, "num_frames": 30})
    assert watch_statuses(worker_queue, record.job_id) == [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED]

    done = worker_queue.store.get(record.job_id)
    assert done is not None and done.error is None
    assert (done.progress.step, done.progress.total) == (4, 4)
    assert done.output is not None
    assert (done.output.num_frames, done.output.height, done.output.width) == (31, 96, 160)
    assert (done.output.fps, done.output.seed) == (30, record.request.seed)
    timings = done.timings
    for phase in ("queue_wait_s", "denoise_s", "decode_s", "encode_s", "total_s"):
        assert getattr(timings, phase) > 0, phase

    assert done.video_path is not None
    assert re.fullmatch(rf"videos/{record.job_id}\.[0-9a-f]{{12}}\.mp4", done.video_path)
    reader = imageio.get_reader(worker_queue.settings.data_dir / done.video_path, "ffmpeg")
    meta = reader.get_meta_data()
    assert (reader.count_frames(), meta["size"], meta["fps"]) == (31, (160, 96), 30.0)
    assert done.has_poster and (worker_queue.settings.data_dir / poster_of(done.video_path)).is_file()


def test_two_jobs_in_a_row_load_the_model_once(worker: Child, worker_queue: JobQueue) -> None:
    owner = new_account()
    first = worker_queue.submit(owner, {"prompt": "a red fox", **SMALL})
    second = worker_queue.submit(owner, {"prompt": "a blue bird", **SMALL})
    records = [finished(worker_queue, first.job_id), finished(worker_queue, second.job_id)]
    assert [r.status for r in records] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
    assert records[0].worker_id is not None
    assert records[0].worker_id == records[1].worker_id
    assert worker.log.count("model tiny loaded") == 1


def test_the_worker_log_says_which_job_each_line_is_about(worker: Child, worker_queue: JobQueue) -> None:
    record = worker_queue.submit(new_account(), {"prompt": "a logged clip", **SMALL, "num_frames": 7})
    assert finished(worker_queue, record.job_id).status is JobStatus.COMPLETED

    def lines_about_it() -> list[str]:
        return [line for line in worker.log.splitlines() if f"job {record.job_id}:" in line]

    # The worker logs "completed" just after it writes the record, so wait for the line itself.
    wait_for(lambda: any("completed" in line for line in lines_about_it()), 60, "the job's completed line")
    about = lines_about_it()
    assert len(about) == 2 and "running" in about[0] and "completed" in about[1], about
    assert all(f" job={record.job_id}: job {record.job_id}: " in line for line in about), about
    assert all(" job=-: " in line for line in worker.log.splitlines() if "ready on queue" in line)


def test_cancel_stops_a_running_job_within_a_step_and_a_queued_one_never_starts(
    worker: Child, worker_queue: JobQueue
) -> None:
    owner = new_account()
    running = worker_queue.submit(owner, {"prompt": "a long walk", **SLOW})
    queued = worker_queue.submit(owner, {"prompt": "never rendered", **SMALL})

    def mid_run() -> JobRecord | None:
        record = worker_queue.store.get(running.job_id)
        return record if record is not None and record.progress.step >= 2 else None

    wait_for(mid_run, 120, "the first job to be a few steps in", interval_s=0.005)
    assert worker_queue.cancel(queued.job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    at_cancel = worker_queue.cancel(running.job_id)
    assert at_cancel is not None and at_cancel.cancel_requested

    ended = finished(worker_queue, running.job_id)
    assert ended.status is JobStatus.CANCELLED
    assert ended.progress.step <= at_cancel.progress.step + 1
    assert ended.video_path is None
    assert not job_videos(worker_queue.settings.videos_dir, running.job_id)

    skipped = worker_queue.store.get(queued.job_id)
    assert skipped is not None and skipped.status is JobStatus.CANCELLED
    assert skipped.started_at is None and skipped.worker_id is None

    # The worker goes on serving after a cancel.
    after = worker_queue.submit(owner, {"prompt": "still working", **SMALL})
    assert finished(worker_queue, after.job_id).status is JobStatus.COMPLETED


def test_no_partial_files_are_left_in_the_videos_folder(worker: Child, worker_queue: JobQueue) -> None:
    record = worker_queue.submit(new_account(), {"prompt": "tidy", **SMALL})
    finished(worker_queue, record.job_id)
    leftovers = [p.name for p in Path(worker_queue.settings.videos_dir).iterdir() if p.suffix not in {".mp4", ".webp"}]
    assert leftovers == []
    assert not any(p.name.startswith(".") for p in worker_queue.settings.videos_dir.iterdir())


def test_a_job_past_its_time_limit_fails_and_the_worker_goes_on(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, tmp_path: Path, children: Children
) -> None:
    limited = replace(settings, job_timeout_s=2)
    queue = JobQueue(redis, limited, count_tokens)
    worker = children.worker(limited, tmp_path / "worker.log")
    slow = queue.submit(new_account(), {"prompt": "too long", **SLOW})
    ended = finished(queue, slow.job_id)
    assert (ended.status, ended.error) == (JobStatus.FAILED, "timed out after 2 s")
    assert not job_videos(limited.videos_dir, slow.job_id)
    # The worker goes on: it takes the next job and ends it. A tiny job takes well under the 2 s limit on an
    # idle machine, but a loaded one may take longer, so its own time limit is an accepted end too.
    quick = queue.submit(new_account(), {"prompt": "quick", **SMALL, "num_frames": 7})
    next_one = finished(queue, quick.job_id)
    assert (next_one.worker_id, next_one.attempts) == (ended.worker_id, 1)
    assert next_one.status is JobStatus.COMPLETED or next_one.error == "timed out after 2 s"
    assert worker.process.poll() is None and queue.live_workers() == 1


def test_a_time_limit_that_lands_inside_a_library_is_still_a_timeout(module_settings: Settings) -> None:
    """RQ raises its timeout from a signal wherever the job is; pydantic's serializer wraps it."""
    runner = JobRunner(
        queue=None, renderer=None, settings=replace(module_settings, job_timeout_s=1), videos=None, worker_id="w"
    )  # type: ignore[arg-type]
    wrapped = ValueError("Error serializing to JSON: JobTimeoutException: Task exceeded maximum timeout value")
    assert runner._timed_out(wrapped, started=time.monotonic() - 1)
    assert not runner._timed_out(wrapped, started=time.monotonic())
    chained = RuntimeError("outer")
    chained.__context__ = JobTimeoutException("inner")
    assert runner._timed_out(chained, started=time.monotonic())


class FailingRenderer:
    """A renderer whose pipeline raises: what the runner does around a failure, without a model."""

    model_name = "failing"

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.released = 0

    def render(
        self, request: GenerationRequest, on_step: StepCallback, checkpointing: Checkpointing = NO_CHECKPOINTS
    ) -> Rendering:
        on_step(1, request.num_inference_steps)
        raise self.error

    made_with: ClassVar[dict[str, Any]] = {"model": {"id": "still", "revision": None}}

    def release_memory(self) -> None:
        self.released += 1


@pytest.mark.parametrize("error", [RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"), ValueError("bug")])
def test_any_pipeline_failure_releases_the_memory_before_the_next_job(
    job_queue: JobQueue, error: BaseException
) -> None:
    renderer = FailingRenderer(error)
    settings = job_queue.settings
    runner = JobRunner(
        queue=job_queue, renderer=renderer, settings=settings, videos=open_storage(settings), worker_id="w"
    )
    record = job_queue.submit(new_account(), {"prompt": "a cat", **SMALL})
    runner.run(record.job_id)
    ended = job_queue.store.get(record.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED
    assert renderer.released == 1
