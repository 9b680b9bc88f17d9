"""HTML fragments the page shows: the model banner, a job's status card, its player, a gallery caption."""

from __future__ import annotations

import time
from html import escape

from mochi_app.accounts import HUGGING_FACE_PREFIX, LOCAL_ACCOUNT
from mochi_app.eta import Phase
from mochi_app.guests import GUEST_PREFIX
from mochi_app.public import BatchPublic, JobPublic, QuotePublic
from mochi_app.records import JobStatus
from mochi_app.served_model import ServedModel
from mochi_app.stages import Stage
from mochi_app.worker_state import WorkerState, headline

STAGE_WORDS = {
    Stage.STARTING: "starting up",
    Stage.DOWNLOADING: "downloading the model",
    Stage.LOADING: "loading the weights",
    Stage.MOVING: "moving the model to its device",
    Stage.WARMING_UP: "warming up",
}


def sentence(text: str) -> str:
    """An error message as a sentence on the page: capitalised, full stop."""
    return text[:1].upper() + text[1:].rstrip(".") + "."


def frames_label(num_frames: int, fps: int) -> str:
    return f"{num_frames} frames = {num_frames / fps:.1f} s at {fps} fps"


def tokens_label(tokens: int | None, limit: int) -> str:
    if tokens is None:
        return "Token count appears once a worker has loaded the model."
    if tokens > limit:
        return f"**{tokens} / {limit} tokens: too long.** Shorten it to {limit} tokens or fewer."
    return f"{tokens} / {limit} tokens"


def who_label(account: str | None) -> str:
    if account is None:
        return "Sign in with an API key to use the studio."
    if account.startswith(GUEST_PREFIX):
        return (
            "You are a guest: your videos are private to this browser. "
            "Sign in with an API key to reach an account's videos from anywhere."
        )
    if account.startswith(HUGGING_FACE_PREFIX):
        return f"Signed in with Hugging Face as **{escape(account.removeprefix(HUGGING_FACE_PREFIX))}**."
    if account == LOCAL_ACCOUNT:
        return "Local studio: this machine's owner. API calls without a key from this machine show here too."
    return f"Signed in as **{escape(account)}**."


def model_banner(card: ServedModel | None, workers: list[WorkerState] | None = None) -> str:
    """Which model renders the jobs; until a worker is ready, how far the newest one has got, or why it failed."""
    news = headline(workers or [])
    if news is not None and news.stage is Stage.FAILED:
        reason = escape(sentence(news.detail or "it stopped"))
        return f'<div class="banner error">No worker could start. {reason} Jobs wait in the queue meanwhile.</div>'
    if news is not None:
        return _starting_banner(news)
    if card is None:
        return '<div class="banner warn">No worker has started yet. Jobs wait in the queue until one is ready.</div>'
    if card.is_tiny:
        return (
            '<div class="banner warn">Model: <b>tiny</b>, random weights for trying the studio without a GPU. '
            "Its videos are noise.</div>"
        )
    return f'<div class="banner">Model: <b>{escape(card.name)}</b></div>'


def _starting_banner(worker: WorkerState) -> str:
    stage = STAGE_WORDS.get(worker.stage, str(worker.stage))
    detail = f" {escape(sentence(worker.detail))}" if worker.detail else ""
    lines = [f"<b>A worker is starting: {stage}.</b>{detail}"]
    if worker.download is not None:
        download = worker.download
        lines.append(f'<progress value="{download.done_bytes}" max="{max(1, download.total_bytes)}"></progress>')
        lines.append(f'<span class="meta">{escape(download.describe())}</span>')
    lines.append('<span class="meta">Jobs wait in the queue until it is ready.</span>')
    return '<div class="banner starting">' + "".join(f"<div>{line}</div>" for line in lines) + "</div>"


def status_card(job: JobPublic | None) -> str:
    """The followed job: where it is in the queue, how far it got, or how it ended."""
    if job is None:
        return '<div class="job-card empty">Write a prompt and press Generate. Your video appears here.</div>'
    lines = [f'<span class="badge {job.status.lower()}">{job.status}</span> <code>{job.job_id[:8]}</code>']
    lines.append(escape(_clip(job.request.prompt, 140)))
    lines.append(_state_line(job))
    if job.status is JobStatus.RUNNING:
        lines.append(f'<progress value="{job.progress.step}" max="{job.progress.total}"></progress>')
    if job.preview_url is not None:  # relative, as the player's: the page may be served under a path
        src = escape(job.preview_url.lstrip("/"))
        lines.append(f'<img class="preview" src="{src}" alt="How the video looks so far, before the decode">')
    lines.append(f'<span class="meta">{_meta(job)}</span>')
    return '<div class="job-card">' + "".join(f"<div>{line}</div>" for line in lines) + "</div>"


def quote_label(quote: QuotePublic) -> str:
    """What the form would cost before it is queued: "About 2 min on the GPU; starts in about 5 min.", and
    the balance."""
    run = f"About {about(quote.estimated_run_s)} on the GPU"
    if quote.estimated_wait_s is None:
        start = "it starts once a worker is running"
    elif quote.estimated_wait_s < 1:
        start = "it would start now"
    else:
        start = f"starts in about {about(quote.estimated_wait_s)}"
    text = f"{run}; {start}."
    budget = quote.budget
    if budget.left_gpu_s is not None:
        text += f" {budget.left_gpu_s:.0f} of your {budget.daily_gpu_seconds} GPU-seconds a day left."
        if not quote.fits_budget:
            text = f"**Over your budget:** this needs about {quote.estimated_run_s:.0f} GPU-seconds. " + text
    return text


def player(job: JobPublic | None) -> str:
    """The finished video with a download link; nothing until there is one."""
    if job is None or job.download_url is None:
        return ""
    src = escape(job.download_url.lstrip("/"))  # relative, so it works under any root path
    return (
        f'<video class="player" src="{src}" controls autoplay loop muted playsinline></video>'
        f'<a class="download" href="{src}" download="mochi-{job.job_id}.mp4">Download MP4</a>'
    )


def gallery_media(job: JobPublic) -> str:
    """A gallery tile's picture: the finished video's poster (the player loads only on Open), else how far
    the job has got (its badge is in the caption)."""
    if job.thumbnail_url is not None:
        src = escape(job.thumbnail_url.lstrip("/"))  # relative: the page may be served under a path (a Space)
        return f'<img class="thumb" src="{src}" alt="{escape(_clip(job.request.prompt, 90))}" loading="lazy">'
    if job.download_url is not None:  # finished before posters were made
        return '<div class="thumb placeholder"><span>Open to play</span></div>'
    if job.status is JobStatus.RUNNING:
        progress = f'<progress value="{job.progress.step}" max="{job.progress.total}"></progress>'
        if job.preview_url is not None:  # the live preview, with how far the job has got over it
            src = escape(job.preview_url.lstrip("/"))
            return (
                f'<div class="thumb live"><img src="{src}" alt="How the video looks so far">'
                f'<div class="live-state"><span>{_state_line(job)}</span>{progress}</div></div>'
            )
        return f'<div class="thumb placeholder running"><span>{_state_line(job)}</span>{progress}</div>'
    if job.status is JobStatus.PENDING:
        return f'<div class="thumb placeholder"><span>{_state_line(job)}</span></div>'
    return '<div class="thumb placeholder"><span>No video</span></div>'


def gallery_caption(job: JobPublic) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created_at))
    return (
        f'<div class="caption"><div class="prompt">{escape(_clip(job.request.prompt, 90))}</div>'
        f'<div class="meta"><span class="badge {job.status.lower()}">{job.status}</span> '
        f"seed {job.request.seed} · {job.duration_s:.1f} s · {created}</div></div>"
    )


def sheet_caption(job: JobPublic) -> str:
    """A contact sheet tile's caption: the seed is what differs between its tiles."""
    return (
        f'<div class="caption"><div class="prompt">Seed {job.request.seed}</div>'
        f'<div class="meta"><span class="badge {job.status.lower()}">{job.status}</span> '
        f"{job.request.num_inference_steps} steps · {job.duration_s:.1f} s</div></div>"
    )


def sweep_heading(batch: BatchPublic) -> str:
    """The contact sheet's title: the prompt, how many seeds, and how far they have got."""
    prompt = escape(_clip(batch.jobs[0].request.prompt, 90)) if batch.jobs else ""
    done = batch.statuses.get(JobStatus.COMPLETED, 0)
    state = "all ended" if batch.finished else f"{done} of {len(batch.jobs)} done"
    return (
        f'<div class="sheet-heading"><h3>Seed sweep: {len(batch.jobs)} seeds, {state}</h3><div>{prompt}</div>'
        '<div class="meta">Pick the one you like and press <b>Make final</b>: the same seed and shape, '
        "with the Final preset's steps.</div></div>"
    )


def _state_line(job: JobPublic) -> str:
    if job.status is JobStatus.PENDING:
        ahead = job.queue_position
        starts = f"; starts in about {about(job.eta_start_s)}" if job.eta_start_s else ""
        if ahead is None or ahead == 0:
            return f"Queued: next in line{starts}."
        return f"Queued: {ahead} job{'s' if ahead != 1 else ''} ahead{starts}."
    if job.status is JobStatus.RUNNING:
        eta = f", about {_seconds(job.eta_s)} left" if job.eta_s is not None else ""
        if job.phase is Phase.DECODING:
            return f"Decoding the video{eta}."
        return f"Step {job.progress.step} of {job.progress.total}{eta}."
    if job.status is JobStatus.COMPLETED:
        took = job.timings.total_s or 0.0
        return f"Done in {_seconds(took)} (denoise {_seconds(job.timings.denoise_s or 0.0)})."
    if job.status is JobStatus.FAILED:
        return f'<span class="error">Failed: {escape(job.error or "unknown error")}</span>'
    return "Cancelled."


def _meta(job: JobPublic) -> str:
    request = job.request
    return (
        f"seed {request.seed} · {frames_label(job.num_frames, request.fps)} · "
        f"{request.width}x{request.height} · {request.num_inference_steps} steps · guidance {request.guidance_scale:g}"
    )


def _seconds(seconds: float | None) -> str:
    seconds = seconds or 0.0
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def about(seconds: float | None) -> str:
    """A rough duration: "40 s", "2 min", "1.5 h"."""
    seconds = seconds or 0.0
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
