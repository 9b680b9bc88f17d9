"""The RQ job function: thin, JSON in (a job id); runs the job on the worker's loaded renderer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from rq.timeouts import JobTimeoutException

from mochi_app.config import Settings
from mochi_app.generator import PromptTooLong, Rendering, StepCallback
from mochi_app.schemas import GenerationRequest, JobRecord, JobStatus, Timings, VideoInfo
from mochi_app.store import JobStore
from mochi_app.video import video_path, write_mp4

log = logging.getLogger(__name__)

TIME_LIMIT_SLACK_S = 0.5  # RQ's clock starts a moment before ours does


class JobCancelled(Exception):
    """Raised from the step callback to stop a job whose cancel was requested."""


class Renderer(Protocol):
    """What a worker needs from the model (generator.MochiRenderer, or anything shaped like it)."""

    model_name: str

    def render(self, request: GenerationRequest, on_step: StepCallback) -> Rendering: ...


@dataclass(frozen=True, slots=True)
class JobRunner:
    """Runs one job from PENDING to a terminal state, keeping its record current."""

    store: JobStore
    renderer: Renderer
    settings: Settings
    worker_id: str

    def run(self, job_id: str) -> None:
        record = self.store.update(job_id, self._start)
        if record is None or record.status is not JobStatus.RUNNING or record.worker_id != self.worker_id:
            log.info("job %s: not pending any more, skipped", job_id)
            return
        log.info("job %s: running", job_id)
        started = time.monotonic()
        try:
            record = self._render(record)
        except JobCancelled:
            self._finish(job_id, JobStatus.CANCELLED, error=None)
        except PromptTooLong as exc:
            self._finish(job_id, JobStatus.FAILED, error=str(exc))
        except Exception as exc:
            if self._timed_out(exc, started):
                self._finish(job_id, JobStatus.FAILED, error=f"timed out after {self.settings.job_timeout_s} s")
                return
            log.exception("job %s failed", job_id)
            self._finish(job_id, JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            log.info("job %s: completed in %.1f s", job_id, record.timings.total_s or 0.0)

    def _start(self, record: JobRecord) -> JobRecord | None:
        if record.status is not JobStatus.PENDING:
            return None
        now = time.time()
        return record.model_copy(
            update={
                "status": JobStatus.RUNNING,
                "started_at": now,
                "attempts": record.attempts + 1,
                "worker_id": self.worker_id,
                "model": self.renderer.model_name,
                "timings": Timings(queue_wait_s=now - record.created_at, load_s=0.0),
            }
        )

    def _render(self, record: JobRecord) -> JobRecord:
        request = record.request
        rendering = self.renderer.render(request, on_step=self._step_reporter(record.job_id))
        path = video_path(self.settings.videos_dir, record.job_id)
        encode_started = time.perf_counter()
        write_mp4(rendering.frames, path, request.fps)
        encode_s = time.perf_counter() - encode_started
        frame_count, height, width, _ = rendering.frames.shape

        def complete(current: JobRecord) -> JobRecord | None:
            if not self._owns(current):
                return None
            now = time.time()
            timings = current.timings.model_copy(
                update={
                    "denoise_s": rendering.denoise_s,
                    "decode_s": rendering.decode_s,
                    "encode_s": encode_s,
                    "total_s": now - current.created_at,
                }
            )
            return current.model_copy(
                update={
                    "status": JobStatus.COMPLETED,
                    "finished_at": now,
                    "timings": timings,
                    "video_path": str(path.relative_to(self.settings.data_dir)),
                    "output": VideoInfo(
                        num_frames=frame_count, height=height, width=width, fps=request.fps, seed=request.seed or 0
                    ),
                }
            )

        finished = self.store.update(record.job_id, complete)
        if finished is None:  # the record was deleted while we rendered: drop the orphan video
            path.unlink(missing_ok=True)
            return record
        return finished

    def _timed_out(self, exc: BaseException, started: float) -> bool:
        """RQ's time limit arrives as a signal-raised JobTimeoutException wherever the job is, and
        code it lands in may wrap it (pydantic's serializer does): so also trust the clock."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, JobTimeoutException):
                return True
            cause = cause.__cause__ or cause.__context__
        return time.monotonic() - started >= self.settings.job_timeout_s - TIME_LIMIT_SLACK_S

    def _owns(self, record: JobRecord) -> bool:
        """Whether the record still says this worker runs the job (a reaper may have given it away)."""
        return record.status is JobStatus.RUNNING and record.worker_id == self.worker_id

    def _step_reporter(self, job_id: str) -> StepCallback:
        def report(step: int, total: int) -> None:
            def advance(current: JobRecord) -> JobRecord | None:
                if not self._owns(current):
                    return None
                return current.model_copy(update={"progress": current.progress.model_copy(update={"step": step})})

            record = self.store.update(job_id, advance)
            # Stop at once when cancelled, or when the job is no longer ours (re-queued as lost).
            if record is None or record.cancel_requested or not self._owns(record):
                raise JobCancelled(job_id)

        return report

    def _finish(self, job_id: str, status: JobStatus, error: str | None) -> None:
        def end(current: JobRecord) -> JobRecord | None:
            if not self._owns(current):
                return None
            now = time.time()
            return current.model_copy(
                update={
                    "status": status,
                    "error": error,
                    "finished_at": now,
                    "timings": current.timings.model_copy(update={"total_s": now - current.created_at}),
                }
            )

        self.store.update(job_id, end)
        log.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")


_runner: JobRunner | None = None


def install_runner(runner: JobRunner) -> None:
    """Called once by the worker process after it has loaded the model."""
    global _runner  # noqa: PLW0603 - RQ calls a function by name; the loaded model must outlive the call
    _runner = runner


def render(job_id: str) -> None:
    """The RQ entry point (`mochi_app.tasks.render`): its only argument is JSON, a job id."""
    if _runner is None:
        raise RuntimeError("mochi_app.tasks.render runs only inside `python -m mochi_app worker`")
    _runner.run(job_id)
