"""One table of refusals (errors.ERRORS): every error class of ours is in it or said not to reach the web, and REST
and the page give each the same words."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.types import Receive, Scope, Send

import mochi_app
from mochi_app.api import install_error_handlers
from mochi_app.budgets import OverBudget
from mochi_app.callers import NotSignedIn
from mochi_app.disk import LowOnDisk
from mochi_app.errors import (
    ERRORS,
    QUEUE_UNREACHABLE,
    STORE_UNREACHABLE,
    AccountNotFound,
    BatchNotFound,
    CrossSiteWrite,
    JobConflict,
    JobNotFound,
    NotOffered,
    RequestTooLarge,
    refusal,
)
from mochi_app.events import user_errors
from mochi_app.middleware import send_refusal
from mochi_app.provenance import NoProvenance
from mochi_app.queue import IdempotencyConflict, TooBusy
from mochi_app.schemas import InvalidRequest
from mochi_app.storage import StorageUnusable

# Our error classes that never reach a web request, and where each is handled instead.
NOT_THE_WEBS = {
    "mochi_app.config.SettingsError": "a bad MOCHI_* variable: the process says so in one line and exits 2",
    "mochi_app.accounts.AccountError": "`python -m mochi_app accounts`: printed, exit 1",
    "mochi_app.connections.QueueUnavailable": "start-up: app.py and serve print one line and exit 1",
    "mochi_app.loader.ModelUnavailable": "a worker or `generate`: start-up fails with the reason",
    "mochi_app.renderer.PromptTooLong": "a worker: the job FAILs with the message",
    "mochi_app.renderer.OutOfMemory": "a worker: the job FAILs with the message",
    "mochi_app.renderer.DecodeFailed": "a worker: the decode is tried again on the same latents",
    "mochi_app.download.HubUnreachable": "a worker's first start: its stage FAILED says why",
    "mochi_app.video.VideoNotWritten": "a worker: the job FAILs",
    "mochi_app.webhook_delivery.Refused": "a webhook delivery: its attempt's error, and no retry",
    "mochi_app.snapshots.SnapshotUnusable": "`backup`/`restore`: printed, exit 2; app.py's restore at boot logs it",
    "mochi_app.runner.JobCancelled": "a worker: ends the render of a cancelled job",
    "mochi_app.runner.StoppingWorker": "a worker: puts its job back on the queue",
}

# One instance of each row's class, as the code raises it.
RAISED = [
    InvalidRequest({"prompt": "prompt must not be empty"}),
    NotSignedIn("sign in: send the header 'Authorization: Bearer YOUR_API_KEY'"),
    JobNotFound("0123"),
    AccountNotFound("someone"),
    JobConflict("job 0123 is already COMPLETED"),
    RequestTooLarge("the request body is 70000 bytes; the limit is 65536"),
    CrossSiteWrite("requests from another site's page are refused"),
    NotOffered("not offered here"),
    IdempotencyConflict("this Idempotency-Key was used within the last 24 h for a submit with other parameters"),
    TooBusy("you have 10 jobs waiting; the limit is 10", retry_after_s=7),
    LowOnDisk("less than 1.0 GiB is free for videos"),
    StorageUnusable("the object store's bucket 'videos' cannot be reached (timed out)"),
    RedisConnectionError("Connection refused"),
    NoProvenance("this video carries no studio record (no comment tag)"),
    OverBudget("this job needs about 40 GPU-seconds and you have 12 left", retry_after_s=3600),
    BatchNotFound("4567"),
]


def our_error_classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module_info in pkgutil.iter_modules(mochi_app.__path__, "mochi_app."):
        if module_info.name == "mochi_app.__main__":  # importing it runs the command line
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.add(value)
    return found


def test_every_error_class_of_ours_has_a_row_or_is_not_the_webs() -> None:
    names = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in our_error_classes()}
    assert set(NOT_THE_WEBS) <= set(names), "NOT_THE_WEBS names a class that no longer exists"
    for name, cls in names.items():
        kinds = {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}  # a SettingsError's kinds are settings
        if not kinds & set(NOT_THE_WEBS):
            assert any(c in ERRORS for c in cls.__mro__), f"{name} has no row in errors.ERRORS"
    assert {type(exc) for exc in RAISED} <= set(ERRORS) | {RedisConnectionError}
    assert {next(c for c in type(exc).__mro__ if c in ERRORS) for exc in RAISED} == set(ERRORS)


@pytest.fixture(scope="module")
def rest() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{index}")
    def raise_one(index: int) -> None:
        raise RAISED[index]

    return TestClient(app)


@pytest.mark.parametrize(
    ("index", "status", "headers", "detail"),
    [
        (0, 422, {}, "prompt must not be empty"),
        (1, 401, {"www-authenticate": "Bearer"}, "sign in: send the header 'Authorization: Bearer YOUR_API_KEY'"),
        (2, 404, {}, "no job with id '0123'"),
        (3, 404, {}, "no account with id 'someone'"),
        (4, 409, {}, "job 0123 is already COMPLETED"),
        (5, 413, {}, "the request body is 70000 bytes; the limit is 65536"),
        (6, 403, {}, "requests from another site's page are refused"),
        (7, 404, {}, "not offered here"),
        (8, 409, {}, "this Idempotency-Key was used within the last 24 h for a submit with other parameters"),
        (9, 429, {"retry-after": "7"}, "you have 10 jobs waiting; the limit is 10"),
        (10, 503, {"retry-after": "60"}, "less than 1.0 GiB is free for videos"),
        (11, 503, {"retry-after": "30"}, STORE_UNREACHABLE),
        (12, 503, {"retry-after": "5"}, QUEUE_UNREACHABLE),
        (13, 422, {}, "this video carries no studio record (no comment tag)"),
        (
            14,
            429,
            {"retry-after": "3600"},
            "this job needs about 40 GPU-seconds and you have 12 left",
        ),
        (15, 404, {}, "no batch with id '4567'"),
    ],
)
def test_rest_and_the_page_answer_each_row_alike(
    rest: TestClient, index: int, status: int, headers: dict[str, str], detail: str
) -> None:
    response = rest.get(f"/raise/{index}")
    assert response.status_code == status
    assert response.json()["detail"] == detail
    for name, value in headers.items():
        assert response.headers[name] == value
    if index == 0:
        assert response.json()["errors"] == {"prompt": "prompt must not be empty"}

    async def refusing_middleware(scope: Scope, receive: Receive, send: Send) -> None:
        await send_refusal(send, RAISED[index])

    early = TestClient(refusing_middleware).get("/")  # type: ignore[arg-type]
    assert (early.status_code, early.json()) == (status, {"detail": detail})
    for name, value in headers.items():
        assert early.headers[name] == value

    @user_errors
    def handler() -> None:
        raise RAISED[index]

    with pytest.raises(gr.Error) as shown:
        handler()
    assert shown.value.message == detail


def test_an_error_that_is_not_ours_to_explain_is_not_dressed_up() -> None:
    assert refusal(KeyError("x")) is None

    @user_errors
    def handler() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        handler()
