"""How long a running job has left, phase by phase: measured steps for the denoising, its quote for the rest."""

from __future__ import annotations

from enum import StrEnum

from mochi_app.records import JobRecord, JobStatus


class Phase(StrEnum):
    """What a job is doing now, as the page names it."""

    WAITING = "waiting"
    DENOISING = "denoising"
    DECODING = "decoding"  # the steps are done: decoding the latents and writing the MP4


def phase(record: JobRecord) -> Phase | None:
    if record.status is JobStatus.PENDING:
        return Phase.WAITING
    if record.status is not JobStatus.RUNNING:
        return None
    return Phase.DECODING if record.denoised_at is not None else Phase.DENOISING


def run_left_s(record: JobRecord, now: float) -> float | None:
    """Seconds until a RUNNING job's video is done, decode and encode included; None when nothing says."""
    if record.status is not JobStatus.RUNNING or record.started_at is None:
        return None
    after = record.quote.after_denoise_s if record.quote is not None else None
    if record.denoised_at is not None:
        return None if after is None else round(max(0.0, after - (now - record.denoised_at)), 1)
    done = record.progress.step - (record.resumed_from_step or 0)
    if done <= 0:
        return None if record.quote is None else round(max(0.0, record.quote.run_s - (now - record.started_at)), 1)
    per_step_s = (now - record.started_at) / done
    return round(per_step_s * (record.progress.total - record.progress.step) + (after or 0.0), 1)


def decode_left_s(record: JobRecord, now: float) -> float | None:
    """While decoding, the seconds the decode and encode have left by the quote."""
    return run_left_s(record, now) if phase(record) is Phase.DECODING else None
