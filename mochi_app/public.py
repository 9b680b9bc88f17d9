"""What REST and the Gradio API answer: a job as its owner sees it, a page of jobs, and the service's health."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from mochi_app.budgets import Budget
from mochi_app.eta import Phase, phase, run_left_s
from mochi_app.records import CostEstimate, JobRecord, JobStatus, Progress, Timings, VideoInfo, Webhook
from mochi_app.schemas import GenerationRequest
from mochi_app.stages import DownloadProgress, Stage


class JobPublic(BaseModel):
    """A job as its owner sees it through REST and the Gradio API."""

    job_id: str
    status: JobStatus
    request: GenerationRequest
    num_frames: int
    duration_s: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: Progress
    queue_position: int | None = Field(description="jobs ahead of this one while PENDING")
    eta_start_s: float | None = Field(
        default=None, description="while PENDING, seconds until a worker starts it (None while no worker is live)"
    )
    phase: Phase | None = Field(default=None, description="waiting, denoising or decoding; None once it has ended")
    eta_s: float | None = Field(
        description="while RUNNING, seconds until the video is done: the steps left at the measured pace, then "
        "the decode and encode as quoted"
    )
    quote: CostEstimate | None = Field(default=None, description="the seconds each phase was predicted to take")
    timings: Timings
    model: str | None
    error: str | None
    output: VideoInfo | None
    peak_gpu_memory_bytes: int | None = Field(
        default=None, description="the most GPU memory the render held, once COMPLETED on a CUDA GPU; None on a CPU"
    )
    attempts: int = Field(default=0, description="runs started; a run handed back by a stopping worker does not count")
    resumed_from_step: int | None = Field(
        default=None, description="the saved step this run went on from (a checkpoint); None: from step 0"
    )
    steps_run: int = Field(default=0, description="denoising steps run over all runs")
    decode_retries: int = Field(default=0, description="decodes tried again on the saved latents after one failed")
    download_url: str | None = Field(description="where the MP4 is, once COMPLETED")
    thumbnail_url: str | None = Field(
        default=None, description="where its poster is (a small animated WebP of a few frames), once COMPLETED"
    )
    preview_url: str | None = Field(
        default=None, description="while RUNNING, where its live preview is (a WebP of the middle frame, no VAE)"
    )
    webhook: Webhook | None = Field(default=None, description="where events are posted, and each attempt")
    batch_id: str | None = Field(default=None, description="the seed sweep it belongs to (`GET /batches/{id}`)")

    @classmethod
    def of(
        cls,
        record: JobRecord,
        queue_position: int | None = None,
        has_video: bool = False,
        eta_start_s: float | None = None,
    ) -> JobPublic:
        """The record as its owner sees it, with its queue position and start estimate, and whether its
        video can be fetched."""
        return cls(
            job_id=record.job_id,
            status=record.status,
            request=record.request,
            num_frames=record.num_frames,
            duration_s=round(record.num_frames / record.request.fps, 2),
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            progress=record.progress,
            queue_position=queue_position,
            eta_start_s=eta_start_s,
            phase=phase(record),
            eta_s=run_left_s(record, time.time()),
            quote=record.quote,
            timings=record.timings,
            model=record.model,
            error=record.error,
            output=record.output,
            peak_gpu_memory_bytes=record.peak_gpu_memory_bytes,
            attempts=record.attempts,
            resumed_from_step=record.resumed_from_step,
            steps_run=record.steps_run,
            decode_retries=record.decode_retries,
            download_url=download_path(record.job_id) if has_video else None,
            thumbnail_url=thumbnail_path(record.job_id) if has_video and record.has_poster else None,
            preview_url=preview_path(record) if record.status is JobStatus.RUNNING else None,
            webhook=record.webhook,
            batch_id=record.batch_id,
        )


def download_path(job_id: str) -> str:
    """The URL path (relative to the app's root) that serves a finished job's MP4."""
    return f"/download/{job_id}"


def preview_path(record: JobRecord) -> str | None:
    """The URL path of a running job's latest preview; the step in it changes as the preview does."""
    return None if record.preview_step is None else f"/preview/{record.job_id}?step={record.preview_step}"


def thumbnail_path(job_id: str) -> str:
    """The URL path (relative to the app's root) that serves a finished job's poster."""
    return f"/thumbnail/{job_id}"


class JobPagePublic(BaseModel):
    """One page of an account's jobs, newest first; pass `next_cursor` back as `cursor` for the next."""

    jobs: list[JobPublic]
    next_cursor: str | None


class BatchPublic(BaseModel):
    """A seed sweep: one request at several seeds, its jobs in the seeds' order."""

    batch_id: str
    seeds: list[int] = Field(description="each job's seed, in order")
    statuses: dict[JobStatus, int] = Field(description="how many of its jobs are in each status")
    finished: bool = Field(description="whether every job has ended")
    jobs: list[JobPublic]

    @classmethod
    def of(cls, batch_id: str, jobs: list[JobPublic]) -> BatchPublic:
        statuses: dict[JobStatus, int] = {}
        for job in jobs:
            statuses[job.status] = statuses.get(job.status, 0) + 1
        return cls(
            batch_id=batch_id,
            seeds=[job.request.seed or 0 for job in jobs],
            statuses=statuses,
            finished=all(job.status.is_terminal for job in jobs),
            jobs=jobs,
        )


class WorkerStatePublic(BaseModel):
    stage: Stage
    detail: str | None = Field(description="what the stage is doing, or why the worker failed")
    download: DownloadProgress | None = Field(description="while downloading: bytes done of total, rate, ETA")
    updated_at: float


class HealthPublic(BaseModel):
    status: str = Field(description="ok, or degraded when no worker is listening")
    redis: bool
    live_workers: int
    queue_depth: int
    model: str | None = Field(description="the model the workers announced; None before any has started")
    detail: str | None = Field(default=None, description="why no worker takes jobs yet; None while one does")
    workers: list[WorkerStatePublic] = Field(
        default_factory=list, description="each worker's start-up stage, oldest news first"
    )


class QuotePublic(BaseModel):
    """What a request would cost and when it would start, were it submitted now; nothing is queued."""

    estimated_run_s: float = Field(description="GPU-seconds the job is predicted to take, and to be charged")
    estimated_wait_s: float | None = Field(description="seconds until it would start; None while no worker is live")
    queue_position: int = Field(description="jobs that would wait ahead of it")
    live_workers: int
    cost: CostEstimate = Field(description="the prediction phase by phase")
    calibrated_on: int = Field(description="completed jobs the prediction is fitted to; 0: the arithmetic alone")
    budget: Budget = Field(description="the account's GPU time: its allowance, use and balance")
    fits_budget: bool = Field(description="whether the balance covers the job now")
    request: GenerationRequest = Field(description="the request as it would be queued (frames snapped)")
