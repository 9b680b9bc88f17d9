"""The OpenAI-compatible videos API under `/v1/videos`, on the studio's accounts and validation."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mochi_app.api import POSTER, VIDEO, CurrentAccount, Options, stored_response
from mochi_app.errors import JobConflict
from mochi_app.public import JobPublic
from mochi_app.records import JobStatus
from mochi_app.schemas import GenerationRequest, InvalidRequest
from mochi_app.studio import Studio

PREFIX = "/v1"
MODEL = "mochi-1-preview"
MODEL_NAMES = {MODEL, "genmo/mochi-1-preview"}
STATUSES: dict[JobStatus, Literal["queued", "in_progress", "completed", "failed"]] = {
    JobStatus.PENDING: "queued",
    JobStatus.RUNNING: "in_progress",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "failed",  # OpenAI has no cancelled state: a failure whose code says so
}
# Fields the SDK's multipart form sends as text; our request is strict, so each is read as its type.
NUMBERS: dict[str, type[int] | type[float]] = {
    name: float if field.annotation is float else int
    for name, field in GenerationRequest.model_fields.items()
    if name not in {"prompt", "negative_prompt"}
}
DEFAULT_FPS: int = GenerationRequest.model_fields["fps"].default


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    """OpenAI's video object, as the `openai` package reads it."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    seconds: str
    size: str
    error: VideoError | None = None
    remixed_from_video_id: str | None = None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


def as_video(job: JobPublic, remixed_from: str | None = None) -> Video:
    total = max(1, job.progress.total)
    progress = {JobStatus.COMPLETED: 100, JobStatus.PENDING: 0}.get(
        job.status, math.floor(100 * job.progress.step / total)
    )
    ended = job.status in {JobStatus.FAILED, JobStatus.CANCELLED}
    return Video(
        id=job.job_id,
        model=MODEL if job.model in (None, "genmo/mochi-1-preview") else str(job.model),
        status=STATUSES[job.status],
        progress=progress,
        created_at=int(job.created_at),
        completed_at=int(job.finished_at) if job.status is JobStatus.COMPLETED and job.finished_at else None,
        prompt=job.request.prompt,
        seconds=f"{job.duration_s:g}",
        size=f"{job.request.width}x{job.request.height}",
        error=VideoError(code=job.status.lower(), message=job.error or str(job.status)) if ended else None,
        remixed_from_video_id=remixed_from,
    )


def to_params(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's create body as our request's parameters: `seconds` in frames at the clip's fps, `size` as
    width and height, `model` checked; the rest (the SDK's `extra_body`) passes through as our fields."""
    fields = {name: _typed(name, value) for name, value in body.items() if name not in {"model", "seconds", "size"}}
    model = body.get("model")
    if model not in (None, "", *MODEL_NAMES):
        raise InvalidRequest({"model": f"model must be {MODEL!r} (the model this studio serves), got {model!r}"})
    if (size := body.get("size")) is not None:
        width, _, height = str(size).partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise InvalidRequest({"size": f"size must be WIDTHxHEIGHT in pixels, such as 848x480, got {size!r}"})
        fields |= {"width": int(width), "height": int(height)}
    if (seconds := body.get("seconds")) is not None:
        try:
            duration = float(seconds)
        except ValueError:
            raise InvalidRequest({"seconds": f"seconds must be a number, such as 2, got {seconds!r}"}) from None
        if not math.isfinite(duration) or duration <= 0:
            raise InvalidRequest({"seconds": f"seconds must be more than 0, got {seconds!r}"})
        fps = fields.get("fps", DEFAULT_FPS)
        if isinstance(fps, int):  # else the request's validation names the bad fps
            fields["num_frames"] = round(duration * fps) + 1  # frames bound the seconds; snapped to 6k+1 later
    return fields


def _typed(name: str, value: Any) -> Any:
    kind = NUMBERS.get(name)
    if kind is None or not isinstance(value, str):
        return value
    try:
        return kind(value)
    except ValueError:
        return value  # the request's validation quotes it


def build_openai_router(studio: Studio) -> APIRouter:
    """`/v1/videos`: create, retrieve, list, delete, content and remix, each for the caller's own jobs."""
    router = APIRouter(prefix=f"{PREFIX}/videos", tags=["OpenAI-compatible"])

    @router.post("", response_model=Video)
    async def create(request: Request, account: CurrentAccount, options: Options) -> Video:
        """Start a video, as OpenAI's `videos.create` (multipart form, or JSON)."""
        params = to_params(await _body(request))
        return as_video(await run_in_threadpool(studio.submit, account, params, _address(request), options))

    @router.get("/{video_id}", response_model=Video)
    def retrieve(video_id: str, account: CurrentAccount) -> Video:
        return as_video(studio.status(account, video_id))

    @router.get("", response_model=VideoList)
    def list_videos(
        account: CurrentAccount,
        after: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Literal["desc"] = "desc",
    ) -> VideoList:
        """The caller's videos, newest first (`order=desc`, the only order kept), `limit` after `after`."""
        cursor = None if after is None else str(int(studio.record(account, after).created_at * 1_000_000))
        page = studio.jobs(account, limit, cursor)
        videos = [as_video(job) for job in page.jobs]
        first, last = (videos[0].id, videos[-1].id) if videos else (None, None)
        return VideoList(data=videos, first_id=first, last_id=last, has_more=page.next_cursor is not None)

    @router.delete("/{video_id}", response_model=VideoDeleted)
    def delete(video_id: str, account: CurrentAccount) -> VideoDeleted:
        studio.delete(account, video_id)
        return VideoDeleted(id=video_id)

    @router.get(
        "/{video_id}/content",
        response_class=Response,
        responses={200: {"content": {VIDEO: {}, POSTER: {}}}},
    )
    def content(video_id: str, account: CurrentAccount, variant: Literal["video", "thumbnail"] = "video") -> Response:
        """The MP4, or with `variant=thumbnail` its poster (a redirect to a link that expires, with an object
        store); 409 until it is completed."""
        if variant == "thumbnail":
            return stored_response(studio.poster(account, video_id), POSTER, f"{video_id}.webp")
        return stored_response(studio.video(account, video_id), VIDEO, f"{video_id}.mp4")

    @router.post("/{video_id}/remix", response_model=Video)
    async def remix(video_id: str, request: Request, account: CurrentAccount, options: Options) -> Video:
        """A new video with the same parameters (seed included) and a new prompt."""
        body = await _body(request)
        if not isinstance(body.get("prompt"), str):
            raise InvalidRequest({"prompt": "remix needs a new prompt"})
        source = await run_in_threadpool(studio.status, account, video_id)
        if source.status is not JobStatus.COMPLETED:
            raise JobConflict(f"video {video_id} is {STATUSES[source.status]}; only a completed video can be remixed")
        params = source.request.model_dump() | {"prompt": body["prompt"]}
        return as_video(
            await run_in_threadpool(studio.submit, account, params, _address(request), options), remixed_from=video_id
        )

    return router


async def _body(request: Request) -> dict[str, Any]:
    """A JSON object or a form (the `openai` package sends create as multipart), as a dict."""
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.json()
        if not isinstance(body, dict):
            raise InvalidRequest({"body": "the body must be a JSON object"})
        return body
    form = await request.form()
    if any(not isinstance(value, str) for value in form.values()):
        raise InvalidRequest({"input_reference": "this studio renders from text only: no file can be sent"})
    return {name: value for name, value in form.items()}


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None
