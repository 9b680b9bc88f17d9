"""The named Gradio events for gradio_client: submit, status, jobs and cancel, each for the caller's own jobs."""

# No `from __future__ import annotations`: Gradio reads these handlers' type hints at runtime.

from typing import Any

import gradio as gr

from mochi_app.events import account_of, address_of, user_errors
from mochi_app.schemas import GenerationRequest, InvalidRequest
from mochi_app.studio import Studio

DEFAULTS = {name: field.default for name, field in GenerationRequest.model_fields.items()}


def request_params(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request's fields among a handler's arguments (its `locals()`), by name."""
    return {name: value for name, value in arguments.items() if name in DEFAULTS}


def add_api(studio: Studio) -> None:
    """The named events for gradio_client: each answers at once; poll /status until the job ends."""

    def account(request: gr.Request) -> str:
        return account_of(studio, request)

    @user_errors
    def submit(  # noqa: PLR0917 - the API's parameters, in diffusers' order
        request: gr.Request,
        prompt: str,
        negative_prompt: str = DEFAULTS["negative_prompt"],
        num_frames: int = DEFAULTS["num_frames"],
        height: int = DEFAULTS["height"],
        width: int = DEFAULTS["width"],
        num_inference_steps: int = DEFAULTS["num_inference_steps"],
        guidance_scale: float = DEFAULTS["guidance_scale"],
        seed: int | None = None,
        fps: int = DEFAULTS["fps"],
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
    ) -> dict[str, Any]:
        """Queue a prompt; returns the job (its job_id, status and seed) at once. With `webhook_url`, its
        events are posted there, signed, as for REST."""
        hook: dict[str, Any] = {"webhook_url": webhook_url} if webhook_url else {}
        if webhook_events is not None:
            hook["webhook_events"] = webhook_events
        params = hook | request_params(locals())
        return studio.submit(account(request), params, address_of(request)).model_dump(mode="json")

    @user_errors
    def quote(  # noqa: PLR0917 - the API's parameters, in diffusers' order
        request: gr.Request,
        prompt: str,
        negative_prompt: str = DEFAULTS["negative_prompt"],
        num_frames: int = DEFAULTS["num_frames"],
        height: int = DEFAULTS["height"],
        width: int = DEFAULTS["width"],
        num_inference_steps: int = DEFAULTS["num_inference_steps"],
        guidance_scale: float = DEFAULTS["guidance_scale"],
        seed: int | None = None,
        fps: int = DEFAULTS["fps"],
    ) -> dict[str, Any]:
        """What /submit with these parameters would cost in GPU-seconds, when it would start, and your
        balance; nothing is queued."""
        return studio.quote(account(request), request_params(locals())).model_dump(mode="json")

    @user_errors
    def status(request: gr.Request, job_id: str) -> dict[str, Any]:
        """A job's status, progress, queue position and, once COMPLETED, its download_url."""
        return studio.status(account(request), job_id).model_dump(mode="json")

    @user_errors
    def jobs(request: gr.Request, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """Your jobs, newest first; pass next_cursor back as cursor for the next page."""
        # Gradio passes what the caller sent, typed or not: checked here, as REST's query parameters are.
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidRequest({"limit": f"limit must be an integer, got {limit!r}"})
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidRequest({"cursor": f"cursor must be text, got {cursor!r}"})
        return studio.jobs(account(request), limit, cursor).model_dump(mode="json")

    @user_errors
    def cancel(request: gr.Request, job_id: str) -> dict[str, Any]:
        """Cancel a pending job, or stop a running one at its next step."""
        return studio.cancel(account(request), job_id).model_dump(mode="json")

    for fn in (submit, quote, status, jobs, cancel):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)  # type: ignore[attr-defined]
