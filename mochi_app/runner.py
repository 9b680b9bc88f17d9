"""JobRunner: drives one job to an end on the worker's loaded renderer, whatever breaks, and the worker's stop."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.timeouts import JobTimeoutException

from mochi_app.checkpoints import Checkpoint, fingerprint, from_bytes, to_bytes
from mochi_app.config import Settings
from mochi_app.costs import profile_name
from mochi_app.posters import poster_webp
from mochi_app.previews import preview_webp
from mochi_app.provenance import provenance
from mochi_app.queue import JobQueue, past_deadline
from mochi_app.records import JobRecord, JobStatus, Timings, VideoInfo
from mochi_app.recovery import Recovery
from mochi_app.renderer import NO_CHECKPOINTS, TINY, Checkpointing, OutOfMemory, PromptTooLong, Rendering, StepCallback
from mochi_app.schemas import GenerationRequest
from mochi_app.storage import StorageUnusable, VideoStorage
from mochi_app.store import JobStore
from mochi_app.video import VideoNotWritten, write_mp4

log = logging.getLogger(__name__)

T = TypeVar("T")
TIME_LIMIT_SLACK_S = 0.5  # RQ's clock starts a moment before ours does
REDIS_RETRY_FIRST_S = 0.5
REDIS_RETRY_MAX_S = 5.0
# Failures whose message already tells the user what happened and what to try.
EXPLAINED_FAILURES = (PromptTooLong, OutOfMemory, VideoNotWritten)


class JobCancelled(Exception):
    """Raised from the step callback to stop a job whose cancel was requested."""


class StoppingWorker(Exception):
    """Raised from the step callback when the worker's grace period to stop has run out."""


@dataclass
class GracefulStop:
    """The worker was asked to stop: the current job may run on for `grace_s`, then it is given back.

    `request` runs in a signal handler on the main thread, the thread that reads `overdue`: no lock
    is needed, and one could deadlock if a second signal arrived while the first held it.
    """

    grace_s: float
    requested_at: float | None = None

    def request(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()

    @property
    def overdue(self) -> bool:
        return self.requested_at is not None and time.monotonic() - self.requested_at >= self.grace_s


class Renderer(Protocol):
    """What a worker needs from the model (renderer.MochiRenderer, or anything shaped like it)."""

    model_name: str

    @property
    def made_with(self) -> dict[str, Any]:
        """What the MP4's record says of the model, versions and device (provenance.provenance)."""

    def render(
        self, request: GenerationRequest, on_step: StepCallback, checkpointing: Checkpointing = NO_CHECKPOINTS
    ) -> Rendering: ...

    def release_memory(self) -> None: ...


@dataclass(frozen=True, slots=True)
class JobRunner:
    """Runs one job from PENDING to a terminal state, keeping its record current.

    Whatever breaks, the job ends with a reason or goes back on the queue: the pipeline's errors
    become FAILED, a stopping worker gives the job back, and a Redis outage is waited out, so a
    finished video is recorded once Redis returns.
    """

    queue: JobQueue
    renderer: Renderer
    settings: Settings
    videos: VideoStorage
    worker_id: str
    stop: GracefulStop = field(default_factory=lambda: GracefulStop(grace_s=0.0))

    @property
    def store(self) -> JobStore:
        return self.queue.store

    def run(self, job_id: str) -> None:
        record = self._through_outage(job_id, lambda: self.store.update(job_id, self._start))
        if record is None or not self._owns(record):
            log.info("job %s: not pending any more, skipped", job_id)
            return
        log.info("job %s: running", job_id)
        started = time.monotonic()
        rendered = ended = False
        try:
            record = self._render(record)
            rendered = True
            ended = record.status.is_terminal
            if record.status is JobStatus.COMPLETED and record.worker_id == self.worker_id:
                self._calibrate(record)
                peak = record.peak_gpu_memory_bytes
                memory = f", peak GPU memory {peak / 2**30:.1f} GiB" if peak is not None else ""
                log.info("job %s: completed in %.1f s%s", job_id, record.timings.total_s or 0.0, memory)
        except JobCancelled:
            ended = self._finish(job_id, JobStatus.CANCELLED, error=None)
        except StoppingWorker:
            self._give_back(job_id)
        except EXPLAINED_FAILURES as exc:
            ended = self._finish(job_id, JobStatus.FAILED, error=str(exc))
        except Exception as exc:
            if self._timed_out(exc, started):
                error = f"timed out after {self.settings.job_timeout_s} s"
            else:
                log.exception("job %s failed", job_id)
                error = f"the pipeline failed: {type(exc).__name__}: {exc}"
            ended = self._finish(job_id, JobStatus.FAILED, error=error)
        except BaseException:  # a cold stop (second SIGTERM) or Ctrl-C: hand the job on before going
            self._give_back(job_id)
            raise
        finally:
            if ended:  # a job given back, or given away while this worker ran it, resumes from its checkpoint
                self._drop_checkpoint(record)
            if not rendered:
                # By now the failure is handled and its traceback gone, and with it every tensor the
                # render's frames held: what a cancel, a timeout or any pipeline error left is given back.
                self.renderer.release_memory()

    def _start(self, record: JobRecord) -> JobRecord | None:
        if record.status is not JobStatus.PENDING:
            return None
        now = time.time()
        if record.deadline is not None and now > record.deadline:
            return past_deadline(record, now)
        return record.model_copy(
            update={
                "status": JobStatus.RUNNING,
                "started_at": now,
                "attempts": record.attempts + 1,
                "resumed_from_step": None,  # until this attempt reads a checkpoint (_resume_point)
                "preview_step": None,  # a preview from an earlier attempt is not this one's
                "denoised_at": None,
                "worker_id": self.worker_id,
                "model": self.renderer.model_name,
                "timings": Timings(queue_wait_s=now - record.created_at),
            }
        )

    def _render(self, record: JobRecord) -> JobRecord:
        request = record.request
        valid_for = fingerprint(request, self.renderer.model_name)
        start = self._resume_point(record, valid_for)
        saved: list[int] = []

        def save(checkpoint: Checkpoint) -> None:
            try:
                self.videos.save_checkpoint(record, to_bytes(checkpoint, valid_for))
            except (OSError, StorageUnusable) as exc:  # the render goes on; only a resume would be longer
                log.warning("job %s: checkpoint at step %d not saved: %s", record.job_id, checkpoint.step, exc)
                return
            saved.append(checkpoint.step)

        previewed: list[int] = []

        def preview(step: int, latent_frame: np.ndarray) -> None:
            try:
                self.store.keep_preview(record.job_id, preview_webp(latent_frame))
            except RedisError as exc:  # the render goes on; the card shows the step without a picture
                log.warning("job %s: preview at step %d not kept: %s", record.job_id, step, exc)
                return
            previewed.append(step)

        checkpointing = Checkpointing(
            start=start,
            every_steps=self.settings.checkpoint_every_steps,
            save=save,
            preview_every_steps=self.settings.preview_every_steps,
            preview=preview,
        )
        on_step = self._step_reporter(record.job_id, saved, previewed)
        rendering = self.renderer.render(request, on_step, checkpointing)
        staged = self.videos.staging_path(record)
        encode_started = time.perf_counter()
        record_json = json.dumps(provenance(record, self.renderer.made_with), ensure_ascii=False)
        write_mp4(rendering.frames, staged, request.fps, comment=record_json)
        poster = poster_webp(rendering.frames)
        encode_s = time.perf_counter() - encode_started
        video = self.videos.keep(staged, record)  # uploaded, with an object store
        has_poster = self._keep_poster(record, video, poster)
        upload_s = time.perf_counter() - encode_started - encode_s
        frame_count, height, width, _ = rendering.frames.shape

        claimed = False

        def complete(current: JobRecord) -> JobRecord | None:
            # A finished video is the job's result even if the job was re-queued meanwhile (our
            # heartbeat lapsed while Redis was away): only a job that has ended is left alone.
            nonlocal claimed
            if current.status.is_terminal:
                return None
            claimed = True
            now = time.time()
            timings = current.timings.model_copy(
                update={
                    "denoise_s": rendering.denoise_s,
                    "decode_s": rendering.decode_s,
                    "encode_s": encode_s,
                    "upload_s": upload_s,
                    "total_s": now - current.created_at,
                }
            )
            return current.model_copy(
                update={
                    "status": JobStatus.COMPLETED,
                    "worker_id": self.worker_id,
                    "finished_at": now,
                    "timings": timings,
                    "video_path": video,
                    "has_poster": has_poster,
                    "peak_gpu_memory_bytes": rendering.peak_gpu_memory_bytes,
                    "resumed_from_step": rendering.resumed_from_step,
                    "decode_retries": current.decode_retries + rendering.decode_retries,
                    "output": VideoInfo(
                        num_frames=frame_count, height=height, width=width, fps=request.fps, seed=request.seed or 0
                    ),
                }
            )

        def off_the_queue(pipe: Pipeline, completed: JobRecord) -> None:
            self.queue.layout.drop_waiting(pipe, completed.job_id)  # in case it was re-queued meanwhile

        finished = self._through_outage(
            record.job_id, lambda: self.store.update(record.job_id, complete, along_with=off_the_queue)
        )
        if claimed and finished is not None:
            return finished
        log.warning(
            "job %s: ended elsewhere while this worker rendered it (%s); this attempt's video is dropped",
            record.job_id,
            finished.status if finished is not None else "deleted",
        )
        # Ended while we rendered (deleted, cancelled, or finished by another worker while we were frozen):
        # the record does not point at this attempt's video, so dropping it cannot touch the job's.
        self.videos.drop(record, video)
        return finished or record

    def _keep_poster(self, record: JobRecord, video: str, poster: bytes) -> bool:
        """Whether the poster was kept: without one the gallery shows a plain tile, and the video is whole."""
        try:
            self.videos.keep_poster(record, video, poster)
        except (OSError, StorageUnusable) as exc:
            log.warning("job %s: its poster was not kept: %s", record.job_id, exc)
            return False
        return True

    def _calibrate(self, record: JobRecord) -> None:
        """Add the job's timings to this worker's cost profile, so the next quotes learn from them."""
        profile = profile_name(self.renderer.model_name, self.renderer.made_with)
        try:
            self.queue.costs.observe(record, profile, self.renderer.model_name == TINY)
        except RedisError as exc:  # the quotes stay as they were; the video is recorded
            log.warning("job %s: its timings were not added to the cost model: %s", record.job_id, exc)

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

    def _step_reporter(self, job_id: str, saved: list[int], previewed: list[int]) -> StepCallback:
        """Records each step (and the last checkpoint saved, `saved[-1]`, and preview kept, `previewed[-1]`);
        stops the render when it must."""
        redis_away = False

        def report(step: int, total: int) -> None:
            nonlocal redis_away
            if self.stop.overdue:
                raise StoppingWorker(job_id)

            def advance(current: JobRecord) -> JobRecord | None:
                if not self._owns(current):
                    return None
                update = {
                    "progress": current.progress.model_copy(update={"step": step}),
                    "steps_run": current.steps_run + 1,
                    "checkpoint_step": saved[-1] if saved else current.checkpoint_step,
                    "preview_step": previewed[-1] if previewed else current.preview_step,
                    "denoised_at": time.time() if step == total else None,
                }
                return current.model_copy(update=update)

            try:
                record = self.store.update(job_id, advance)
            except RedisError as exc:  # keep rendering: the result is recorded once Redis is back
                if not redis_away:
                    log.warning("job %s: Redis unreachable at step %d (%s); rendering on", job_id, step, exc)
                redis_away = True
                return
            if redis_away:
                log.info("job %s: Redis is back at step %d", job_id, step)
                redis_away = False
            # Stop at once when cancelled, or when the job is no longer ours (re-queued as lost).
            if record is None or record.cancel_requested or not self._owns(record):
                raise JobCancelled(job_id)

        return report

    def _through_outage(self, job_id: str, write: Callable[[], T]) -> T:
        """Retry a record write until Redis answers: the work it records is done and must not be lost."""
        delay_s = REDIS_RETRY_FIRST_S
        while True:
            try:
                return write()
            except RedisError as exc:
                log.warning("job %s: Redis unreachable (%s); trying again in %.1f s", job_id, exc, delay_s)
            except JobTimeoutException:  # the limit guards the rendering, which is over; the record waits
                log.warning("job %s: time limit reached while waiting for Redis; still waiting", job_id)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, REDIS_RETRY_MAX_S)

    def _give_back(self, job_id: str) -> None:
        """Put the job back at the front of the queue for another worker; this run does not count."""
        try:
            Recovery(self.queue).give_back(job_id, self.worker_id)
        except RedisError:  # the reaper finds the job once our heartbeat lapses
            log.warning("job %s: could not give the job back (Redis unreachable); the reaper will", job_id)

    def _finish(self, job_id: str, status: JobStatus, error: str | None) -> bool:
        """End the job, if this worker still runs it; returns whether it did."""
        ours = True

        def end(current: JobRecord) -> JobRecord | None:
            nonlocal ours
            ours = self._owns(current)
            if not ours:
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

        self._through_outage(job_id, lambda: self.store.update(job_id, end))
        if ours:
            log.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")
        else:  # re-queued while we ran (our heartbeat lapsed): its record is another run's now
            log.warning("job %s: no longer this worker's; this run stopped and the job waits for its next run", job_id)
        return ours

    def _resume_point(self, record: JobRecord, valid_for: str) -> Checkpoint | None:
        """The checkpoint an earlier attempt saved, if the record says there is one and it is for this request
        and model; the record then says where this attempt starts."""
        if record.checkpoint_step is None:  # resuming is free even where this worker saves none
            return None
        data = self.videos.load_checkpoint(record)
        start = None if data is None else from_bytes(data, valid_for, record.job_id)
        if start is None:
            return None
        log.info("job %s: resuming from step %d of %d", record.job_id, start.step, record.request.num_inference_steps)

        def resumed(current: JobRecord) -> JobRecord | None:
            return current.model_copy(update={"resumed_from_step": start.step}) if self._owns(current) else None

        self._through_outage(record.job_id, lambda: self.store.update(record.job_id, resumed))
        return start

    def _drop_checkpoint(self, record: JobRecord) -> None:
        try:
            self.videos.drop_checkpoint(record)
        except (OSError, StorageUnusable) as exc:  # it goes with the job's record (retention, delete)
            log.warning("job %s: its checkpoint stays until the job is deleted: %s", record.job_id, exc)
