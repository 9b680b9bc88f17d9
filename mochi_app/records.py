"""What we keep per job: its status, progress, timings and output, stored as JSON at `job:{job_id}`."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, computed_field

from mochi_app.schemas import GenerationRequest


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


class Progress(BaseModel):
    step: int = 0
    total: int


class Timings(BaseModel):
    """Seconds spent in each phase of a job; None until the phase has run.

    No load phase: a worker loads its model once, before it takes jobs (its start-up stages say how long).
    """

    queue_wait_s: float | None = None
    denoise_s: float | None = None
    decode_s: float | None = None
    encode_s: float | None = None
    upload_s: float | None = None  # into the object store (MOCHI_STORAGE_URL); about 0 in the videos folder
    total_s: float | None = None


class CostEstimate(BaseModel):
    """Predicted seconds of each phase of one job on one worker."""

    text_encode_s: float = Field(description="text encoding and set-up, before the first step")
    denoise_s: float = Field(description="the denoising steps")
    decode_s: float = Field(description="the VAE decode")
    encode_s: float = Field(description="writing the MP4")
    other_s: float = Field(description="uploading and recording the result")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def run_s(self) -> float:
        """The whole job on the worker: what it is charged, and what it holds a GPU for."""
        return round(self.text_encode_s + self.denoise_s + self.decode_s + self.encode_s + self.other_s, 3)

    @property
    def after_denoise_s(self) -> float:
        return self.decode_s + self.encode_s + self.other_s


class VideoInfo(BaseModel):
    """What was actually rendered."""

    num_frames: int
    height: int
    width: int
    fps: int
    seed: int


WEBHOOK_EVENTS = ("job.running", "job.completed", "job.failed", "job.cancelled")


class WebhookAttempt(BaseModel):
    """One delivery attempt: when, the event, and the answer's status code or why there was none."""

    at: float
    webhook_id: str
    type: str
    status_code: int | None = None
    error: str | None = None


class Webhook(BaseModel):
    """Where a job's events are posted (Standard Webhooks), and every attempt so far."""

    url: str
    events: list[str] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))
    attempts: list[WebhookAttempt] = Field(default_factory=list)


class JobRecord(BaseModel):
    """Everything we know about one job; stored as JSON at `job:{job_id}`."""

    job_id: str
    account_id: str
    queue_name: str | None = None  # the RQ queue it was submitted to; None: a record from before it was kept
    address: str | None = None  # the submitter's (an IPv4 address or IPv6 /64), for the per-address limit
    status: JobStatus = JobStatus.PENDING
    request: GenerationRequest
    num_frames: int  # what will be rendered; request.num_frames is what was asked
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress
    timings: Timings = Field(default_factory=Timings)
    attempts: int = 0
    worker_id: str | None = None
    model: str | None = None
    cancel_requested: bool = False
    deadline: float | None = None  # from Cancel-After: a job not started by then ends CANCELLED
    batch_id: str | None = None  # the seed sweep it was queued in (`batch:{batch_id}`); None: a job of its own
    webhook: Webhook | None = None
    error: str | None = None
    video_path: str | None = None
    has_poster: bool = False  # a poster was kept beside the video (storage.keep_poster)
    output: VideoInfo | None = None
    peak_gpu_memory_bytes: int | None = None  # CUDA only; None on a CPU
    steps_run: int = 0  # denoising steps run over all attempts (a resumed job runs fewer than attempts x steps)
    checkpoint_step: int | None = None  # the last step whose latents were saved (MOCHI_CHECKPOINT_EVERY_STEPS)
    preview_step: int | None = None  # this attempt's last live preview was made at this step (store.keep_preview)
    resumed_from_step: int | None = None  # this attempt went on from that checkpoint; None: from step 0
    decode_retries: int = 0  # decodes tried again on the saved latents after a failed one
    quote: CostEstimate | None = None  # what the cost model predicted at submit (costs.py)
    denoised_at: float | None = None  # when this attempt's last step ended: decoding since

    @property
    def run_s(self) -> float:
        """Seconds its last run held a worker: what the account is charged (0 for a job that never started)."""
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max(0.0, self.finished_at - self.started_at)
