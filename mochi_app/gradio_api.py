"""The named Gradio events for gradio_client: submit, sweep, quote, status, jobs, batches and cancel, each for the
caller's own jobs."""

# No `from __future__ import annotations`: Gradio reads these handlers' type hints at runtime.

import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr
from pydantic_core import PydanticUndefined

from mochi_app.events import account_of, address_of, user_errors
from mochi_app.schemas import GenerationRequest, InvalidRequest
from mochi_app.studio import Studio

DEFAULTS = {name: field.default for name, field in GenerationRequest.model_fields.items()}
Answer = dict[str, Any]
# What an event built from the request's fields does, given its arguments by name and the caller's request.
Act = Callable[[dict[str, Any], gr.Request], Answer]


def _parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)


# The request's fields in diffusers' order, with their types and defaults: the named events' first parameters.
REQUEST_PARAMETERS = [
    _parameter(name, field.annotation, inspect.Parameter.empty if field.default is PydanticUndefined else field.default)
    for name, field in GenerationRequest.model_fields.items()
]
WEBHOOK_PARAMETERS = [_parameter("webhook_url", str | None, None), _parameter("webhook_events", list[str] | None, None)]
SWEEP_PARAMETERS = [_parameter("count", int | None, None), _parameter("seeds", list[int] | None, None)]


def request_event(name: str, doc: str, act: Act, extra: list[inspect.Parameter] | None = None) -> Callable[..., Answer]:
    """A named event whose parameters are the request's fields and then `extra`, each typed and with its
    default for Gradio's API page and gradio_client; `act` gets them by name, those left out as defaults."""
    parameters = [_parameter("request", gr.Request), *REQUEST_PARAMETERS, *(extra or [])]
    names = [parameter.name for parameter in parameters[1:]]

    def handler(request: gr.Request, *values: Any) -> Answer:
        return act(dict(zip(names, values, strict=False)), request)

    handler.__name__ = handler.__qualname__ = name
    handler.__doc__ = doc
    handler.__signature__ = inspect.Signature(parameters, return_annotation=Answer)  # type: ignore[attr-defined]
    handler.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters} | {"return": Answer}
    return user_errors(handler)


def request_params(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request's fields among an event's arguments, by name."""
    return {name: value for name, value in arguments.items() if name in DEFAULTS}


def given(arguments: dict[str, Any], extra: list[inspect.Parameter]) -> dict[str, Any]:
    """The extras among an event's arguments that the caller gave (None: left out, as an absent REST field)."""
    return {
        parameter.name: arguments[parameter.name] for parameter in extra if arguments.get(parameter.name) is not None
    }


def add_api(studio: Studio) -> None:
    """The named events for gradio_client: each answers at once; poll /status until the job ends."""

    def account(request: gr.Request) -> str:
        return account_of(studio, request)

    def submit(arguments: dict[str, Any], request: gr.Request) -> Answer:
        params = request_params(arguments) | given(arguments, WEBHOOK_PARAMETERS)
        return studio.submit(account(request), params, address_of(request)).model_dump(mode="json")

    def sweep(arguments: dict[str, Any], request: gr.Request) -> Answer:
        params = request_params(arguments) | given(arguments, SWEEP_PARAMETERS)
        return studio.sweep(account(request), params, address_of(request)).model_dump(mode="json")

    def quote(arguments: dict[str, Any], request: gr.Request) -> Answer:
        return studio.quote(account(request), request_params(arguments)).model_dump(mode="json")

    @user_errors
    def status(request: gr.Request, job_id: str) -> Answer:
        """A job's status, progress, queue position and, once COMPLETED, its download_url."""
        return studio.status(account(request), job_id).model_dump(mode="json")

    @user_errors
    def jobs(request: gr.Request, limit: int = 20, cursor: str | None = None) -> Answer:
        """Your jobs, newest first; pass next_cursor back as cursor for the next page."""
        # Gradio passes what the caller sent, typed or not: checked here, as REST's query parameters are.
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidRequest({"limit": f"limit must be an integer, got {limit!r}"})
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidRequest({"cursor": f"cursor must be text, got {cursor!r}"})
        return studio.jobs(account(request), limit, cursor).model_dump(mode="json")

    @user_errors
    def cancel(request: gr.Request, job_id: str) -> Answer:
        """Cancel a pending job, or stop a running one at its next step."""
        return studio.cancel(account(request), job_id).model_dump(mode="json")

    @user_errors
    def batch(request: gr.Request, batch_id: str) -> Answer:
        """A seed sweep's jobs in their seeds' order, and how many are in each status."""
        return studio.batch(account(request), batch_id).model_dump(mode="json")

    @user_errors
    def cancel_batch(request: gr.Request, batch_id: str) -> Answer:
        """Cancel every job of a seed sweep that has not ended."""
        return studio.cancel_batch(account(request), batch_id).model_dump(mode="json")

    @user_errors
    def make_final(request: gr.Request, job_id: str) -> Answer:
        """Render a job again with the Final preset's steps at the same seed, size and frames, as a new job."""
        return studio.make_final(account(request), job_id, address_of(request)).model_dump(mode="json")

    named = [
        request_event(
            "submit",
            "Queue a prompt; returns the job (its job_id, status and seed) at once. With `webhook_url`, its "
            "events are posted there, signed, as for REST.",
            submit,
            WEBHOOK_PARAMETERS,
        ),
        request_event(
            "sweep",
            "Queue a prompt at several seeds as one batch: `count` of them (random, or seed, seed + 1, ... when "
            "seed is given) or the list `seeds`; returns the batch (batch_id, seeds, jobs) at once.",
            sweep,
            SWEEP_PARAMETERS,
        ),
        request_event(
            "quote",
            "What /submit with these parameters would cost in GPU-seconds, when it would start, and your "
            "balance; nothing is queued.",
            quote,
        ),
        status,
        jobs,
        cancel,
        batch,
        cancel_batch,
        make_final,
    ]
    for fn in named:
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)  # type: ignore[attr-defined]
