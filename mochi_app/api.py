"""REST routes: submit, seed sweeps, status, download, thumbnails, previews, list, cancel, health and metrics,
beside the Gradio page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from redis.asyncio import Redis as AsyncRedis
from starlette.exceptions import HTTPException as StarletteHTTPException

from mochi_app.budgets import Budget
from mochi_app.callers import KEY_COOKIE, NotSignedIn
from mochi_app.errors import ERRORS, AccountNotFound, refusal
from mochi_app.event_stream import job_events
from mochi_app.job_events import after_event_id
from mochi_app.metrics import create_registry
from mochi_app.middleware import cookie_header
from mochi_app.public import BatchPublic, HealthPublic, JobPagePublic, JobPublic, QuotePublic
from mochi_app.queue import SubmitOptions
from mochi_app.schemas import GenerationRequest
from mochi_app.storage import StoredFile, VideoLocation
from mochi_app.studio import Studio
from mochi_app.sweeps import MAX_SWEEP_SEEDS

# The body is validated by GenerationRequest.parse (one place, one set of messages); OpenAPI shows its schema.
GENERATE_BODY_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": GenerationRequest.model_json_schema()}},
    }
}


SWEEP_BODY_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "allOf": [GenerationRequest.model_json_schema()],
            "properties": {
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_SWEEP_SEEDS},
                "seeds": {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_SWEEP_SEEDS},
            },
        }}},
    }
}  # fmt: skip


def current_account(request: Request) -> str:
    """Who the request acts for (see callers.Callers); 401 when it can act for nobody."""
    studio: Studio = request.app.state.studio
    return studio.callers.account_for(request.headers)


CurrentAccount = Annotated[str, Depends(current_account)]


def submit_options(
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    cancel_after: Annotated[str | None, Header(max_length=32)] = None,
) -> SubmitOptions:
    """A submit's `Idempotency-Key` and `Cancel-After` headers (checked by JobQueue.submit)."""
    return SubmitOptions(idempotency_key=idempotency_key, cancel_after=cancel_after)


Options = Annotated[SubmitOptions, Depends(submit_options)]
SESSION_MAX_AGE_S = 30 * 24 * 3600


class SignInRequest(BaseModel):
    api_key: str = Field(max_length=200)


class SessionPublic(BaseModel):
    account: str | None = Field(description="who this browser acts for; None when it can act for nobody")
    budget: Budget | None = Field(default=None, description="the account's GPU time; None when signed in as nobody")


def build_router(studio: Studio, events: AsyncRedis) -> APIRouter:
    """The REST routes; the app that includes them must hold the same `studio` in `app.state.studio`.
    `events` is a client of the same server for the event streams, which wait on it without a thread."""
    router = APIRouter()
    registry = create_registry(studio.queue)
    embedded = studio.settings.embedded

    @router.post("/generate", status_code=202, openapi_extra=GENERATE_BODY_DOCS)
    def generate(
        params: Annotated[dict[str, Any], Body()],
        account: CurrentAccount,
        options: Options,
        request: Request,
        response: Response,
    ) -> JobPublic:
        """Queue a prompt; answers at once with the job id. The same `Idempotency-Key` and body within
        24 h return the same job; `Cancel-After` (90s, 5m, 1h30m) ends it CANCELLED if it has not started by then."""
        job = studio.submit(account, params, client_address(request), options)
        response.headers["Location"] = f"/status/{job.job_id}"
        return job

    add_batch_routes(router, studio)

    @router.post("/quote", openapi_extra=GENERATE_BODY_DOCS)
    def quote(params: Annotated[dict[str, Any], Body()], account: CurrentAccount) -> QuotePublic:
        """What a `/generate` with this body would cost in GPU-seconds and when it would start, and the
        account's balance; validated as `/generate` is, and nothing is queued."""
        return studio.quote(account, params)

    @router.get("/status/{job_id}")
    def status(job_id: str, account: CurrentAccount) -> JobPublic:
        """A job's status, progress, queue position, timings and error."""
        return studio.status(account, job_id)

    @router.api_route(
        "/download/{job_id}",
        methods=["GET", "HEAD"],
        response_class=FileResponse,
        responses={200: {"content": {VIDEO: {}}}, 307: {"description": "a short-lived link to the object store"}},
    )
    def download(job_id: str, account: CurrentAccount, request: Request) -> Response:
        """The finished video (MP4), or with an object store a redirect to a link that expires; 409 until
        the job has completed."""
        location = studio.video(account, job_id, "HEAD" if request.method == "HEAD" else "GET")
        return stored_response(location, VIDEO, f"mochi-{job_id}.mp4", disposition="inline")

    @router.api_route(
        "/thumbnail/{job_id}",
        methods=["GET", "HEAD"],
        response_class=FileResponse,
        responses={
            200: {"content": {POSTER: {}}},
            307: {"description": "a short-lived link to the object store"},
        },
    )
    def thumbnail(job_id: str, account: CurrentAccount, request: Request) -> Response:
        """The finished video's poster: a small animated WebP of a few of its frames (the first one first);
        409 until the job has completed."""
        location = studio.poster(account, job_id, "HEAD" if request.method == "HEAD" else "GET")
        return stored_response(location, POSTER, f"mochi-{job_id}.webp", disposition="inline")

    @router.get("/preview/{job_id}", response_class=Response, responses={200: {"content": {POSTER: {}}}})
    def preview(job_id: str, account: CurrentAccount) -> Response:
        """A running job's live preview: its middle frame as the denoising has it now, projected from the
        latents without the VAE (`preview_url` says when it changes); 409 while there is none."""
        return Response(studio.preview(account, job_id), media_type=POSTER, headers=NOT_STORED)

    @router.get(
        "/events/{job_id}",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "the job's events, until it ends"}},
    )
    def event_stream(
        job_id: str, account: CurrentAccount, last_event_id: Annotated[str | None, Header(max_length=64)] = None
    ) -> StreamingResponse:
        """The job's status changes and progress steps as server-sent events, each with an `id:`; send
        `Last-Event-ID` on reconnecting to get only what came after it. Ends after the job's last event."""
        studio.record(account, job_id)  # someone else's job is missing, as everywhere
        return StreamingResponse(
            job_events(events, studio, job_id, after_event_id(last_event_id)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # no proxy may hold events back
        )

    @router.get("/jobs/{account_id}")
    def jobs(
        account_id: str,
        account: CurrentAccount,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=32)] = None,
    ) -> JobPagePublic:
        """An account's jobs, newest first."""
        if account_id != account:
            raise AccountNotFound(account_id)
        return studio.jobs(account, limit, cursor)

    @router.post("/cancel/{job_id}")
    def cancel(job_id: str, account: CurrentAccount) -> JobPublic:
        """Cancel a pending job, or stop a running one at its next step."""
        return studio.cancel(account, job_id)

    @router.post("/session")
    def sign_in(body: SignInRequest, request: Request, response: Response) -> SessionPublic:
        """Sign this browser in with an API key (kept in an HttpOnly cookie)."""
        account = studio.accounts.by_key(body.api_key)
        if account is None:
            raise NotSignedIn("that API key is not valid: it is mistyped or was revoked")
        name, value = cookie_header(
            KEY_COOKIE, body.api_key, request.scope, SESSION_MAX_AGE_S, studio.settings.embedded
        )
        response.headers.append(name.decode(), value.decode("latin-1"))
        return SessionPublic(account=account.name, budget=studio.budget(account.name))

    @router.get("/session")
    def session(request: Request) -> SessionPublic:
        """Who this request acts for, and its GPU-second balance."""
        account = studio.callers.signed_in_as(request.headers)
        return SessionPublic(account=account, budget=studio.budget(account) if account is not None else None)

    @router.delete("/session", status_code=204)
    def sign_out(request: Request, response: Response) -> None:
        """Sign this browser out; it goes back to its guest account, if guests are on."""
        name, value = cookie_header(KEY_COOKIE, "", request.scope, 0, embedded)
        response.headers.append(name.decode(), value.decode("latin-1"))

    @router.get("/healthz", responses={503: {"model": HealthPublic}})
    def healthz() -> JSONResponse:
        """Whether the queue answers, how many workers listen, and how many jobs wait."""
        health = studio.health()
        if health.redis:
            return JSONResponse(health.model_dump())
        return JSONResponse(health.model_dump(), status_code=503, headers={"Retry-After": "5"})

    @router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        """Prometheus metrics: queue depth, live workers, jobs by status, job time and GPU memory histograms."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def client_address(request: Request) -> str | None:
    """The client's address, as the per-address limits count it."""
    return request.client.host if request.client else None


def add_batch_routes(router: APIRouter, studio: Studio) -> None:
    """Seed sweeps: queue one, read one, cancel one, and render any of its jobs again as final."""

    @router.post("/sweep", status_code=202, openapi_extra=SWEEP_BODY_DOCS)
    def sweep(
        params: Annotated[dict[str, Any], Body()],
        account: CurrentAccount,
        options: Options,
        request: Request,
        response: Response,
    ) -> BatchPublic:
        """Queue one request at several seeds as one batch: the `/generate` body with `count` (seeds drawn at
        random, or `seed`, `seed + 1`, … when `seed` is given) or `seeds` (a list). Every limit counts each
        seed as a job; all are queued or none."""
        batch = studio.sweep(account, params, client_address(request), options)
        response.headers["Location"] = f"/batches/{batch.batch_id}"
        return batch

    @router.get("/batches/{batch_id}")
    def batch(batch_id: str, account: CurrentAccount) -> BatchPublic:
        """A sweep's jobs in their seeds' order, and how many are in each status."""
        return studio.batch(account, batch_id)

    @router.post("/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str, account: CurrentAccount) -> BatchPublic:
        """Cancel every job of the sweep that has not ended."""
        return studio.cancel_batch(account, batch_id)

    @router.post("/final/{job_id}", status_code=202)
    def make_final(job_id: str, account: CurrentAccount, request: Request, response: Response) -> JobPublic:
        """Render a job again with the Final preset's steps at the same seed, size and frames (the same
        starting noise, so the draft's motion is kept), as a new job."""
        job = studio.make_final(account, job_id, client_address(request))
        response.headers["Location"] = f"/status/{job.job_id}"
        return job


VIDEO = "video/mp4"
POSTER = "image/webp"
NOT_STORED = {"Cache-Control": "private, no-store"}  # a link that expires, a preview replaced every few steps


def stored_response(
    location: VideoLocation, media_type: str, filename: str, disposition: str = "attachment"
) -> Response:
    """A video or poster where the storage keeps it: the file from here, or a redirect to the store's
    short-lived link."""
    if isinstance(location, StoredFile):
        return FileResponse(
            location.path, media_type=media_type, filename=filename, content_disposition_type=disposition
        )
    # Not cached: the link expires, and it is this caller's alone.
    return RedirectResponse(location.url, status_code=307, headers=NOT_STORED)


def install_error_handlers(app: FastAPI) -> None:
    """Our errors become the answers errors.ERRORS gives them, FastAPI's own in the same words; never a 500 page."""

    async def refuse(request: Request, exc: Exception) -> JSONResponse:
        answer = refusal(exc)
        assert answer is not None  # registered for the table's classes only
        return respond(request, answer.status, answer.detail, answer.headers, answer.errors)

    for error_class in ERRORS:
        app.add_exception_handler(error_class, refuse)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = {_where(error["loc"]): _say(error) for error in exc.errors()}
        return respond(request, 422, "; ".join(errors.values()), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:  # FastAPI's words for undecodable bytes
            detail = "the body must be JSON encoded as UTF-8"
        return respond(request, exc.status_code, detail, dict(exc.headers or {}))


# OpenAI's error types by status, for answers under /v1 (its SDK reads `error.message`).
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                      404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
                      429: "rate_limit_error"}  # fmt: skip


def respond(
    request: Request,
    status_code: int,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> JSONResponse:
    """Our `{"detail", "errors"}`, or under `/v1` OpenAI's `{"error": {"message", "type", "param", "code"}}`
    (with 400 for a bad request, as OpenAI answers it)."""
    if not request.url.path.startswith("/v1/"):
        body: dict[str, Any] = {"detail": detail} | ({"errors": errors} if errors is not None else {})
        return JSONResponse(body, status_code=status_code, headers=headers)
    status_code = 400 if status_code == 422 else status_code
    kind = OPENAI_ERROR_TYPES.get(status_code, "server_error")
    param = next(iter(errors), None) if errors else None
    error = {"message": detail, "type": kind, "param": param, "code": None}
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    """`body`, or the field inside it (`body.limit` -> `limit`, `query.limit` -> `limit`)."""
    named = [str(part) for part in loc[1:] if isinstance(part, str)]
    return ".".join(named) or str(loc[0])


def _say(error: Any) -> str:
    """FastAPI's own checks (JSON syntax, query and path types), phrased like GenerationRequest's."""
    where = _where(error["loc"])
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'syntax error')}"
    if error["loc"][0] == "body" and len(error["loc"]) == 1:
        return 'the body must be a JSON object of parameters, such as {"prompt": "a cat"}'
    return f"{where}: {error['msg'].lower()}, got {error.get('input')!r}"
