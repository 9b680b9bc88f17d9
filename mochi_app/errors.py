"""The studio's refusals: the errors the web raises, and one table of what REST and the page say for each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from mochi_app.budgets import OverBudget
from mochi_app.callers import NotSignedIn
from mochi_app.disk import LowOnDisk
from mochi_app.provenance import NoProvenance
from mochi_app.queue import IdempotencyConflict, TooBusy
from mochi_app.schemas import InvalidRequest
from mochi_app.storage import StorageUnusable

QUEUE_UNREACHABLE = "the job queue is unreachable right now; try again in a moment"
STORE_UNREACHABLE = "the video store is unreachable right now; try again in a moment"


class JobNotFound(LookupError):
    """No such job for this account; another account's job is reported the same way."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id[:64]!r}")


class BatchNotFound(LookupError):
    """No such seed sweep for this account; another account's sweep is reported the same way."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with id {batch_id[:64]!r}")


class AccountNotFound(LookupError):
    """No such account for this caller; another account is reported the same way."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"no account with id {account_id[:64]!r}")


class JobConflict(ValueError):
    """The job exists but is in the wrong state for what was asked."""


class RequestTooLarge(ValueError):
    """The request's body is over MOCHI_MAX_REQUEST_BYTES."""


class CrossSiteWrite(PermissionError):
    """A request that would change something, sent by another site's page."""


class NotOffered(LookupError):
    """A route of Gradio's that the studio does not offer."""


@dataclass(frozen=True, slots=True)
class Row:
    """How one error class is answered: its HTTP status, and what replaces its own words and wait."""

    status: int
    detail: str | None = None  # None: the exception's message
    retry_after_s: int | None = None  # an exception's own `retry_after_s` wins
    headers: Mapping[str, str] = field(default_factory=dict)


ERRORS: dict[type[Exception], Row] = {
    InvalidRequest: Row(422),
    NoProvenance: Row(422),
    NotSignedIn: Row(401, headers={"WWW-Authenticate": "Bearer"}),
    JobNotFound: Row(404),
    BatchNotFound: Row(404),
    AccountNotFound: Row(404),
    JobConflict: Row(409),
    RequestTooLarge: Row(413),
    CrossSiteWrite: Row(403),
    NotOffered: Row(404),
    IdempotencyConflict: Row(409),
    TooBusy: Row(429),
    OverBudget: Row(429),
    LowOnDisk: Row(503),
    RedisError: Row(503, detail=QUEUE_UNREACHABLE, retry_after_s=5),
    StorageUnusable: Row(503, detail=STORE_UNREACHABLE, retry_after_s=30),  # its own words are the operator's
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """What to answer for one raised error: status, a `detail` a person can act on, headers, per-field errors."""

    status: int
    detail: str
    headers: dict[str, str]
    errors: dict[str, str] | None = None


def refusal(exc: BaseException) -> Refusal | None:
    """The answer the table gives `exc` (its nearest listed class); None for an error that is not ours to explain."""
    row = next((ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS), None)
    if row is None:
        return None
    headers = dict(row.headers)
    retry_after_s = getattr(exc, "retry_after_s", row.retry_after_s)
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    errors = exc.errors if isinstance(exc, InvalidRequest) else None
    return Refusal(row.status, row.detail or str(exc), headers, errors)
