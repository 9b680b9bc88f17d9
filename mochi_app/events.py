"""How a Gradio event meets the studio: who is calling, from which address, and our errors as gr.Error."""

# No `from __future__ import annotations`: Gradio reads the wrapped handlers' type hints at runtime.

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr
from redis.exceptions import RedisError

from mochi_app.errors import refusal
from mochi_app.studio import Studio

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn our errors into the messages errors.ERRORS gives them (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            answer = refusal(exc)
            if answer is None:
                raise
            if isinstance(exc, RedisError):
                log.warning("queue unreachable", exc_info=True)
            raise gr.Error(answer.detail, print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def account_of(studio: Studio, request: gr.Request) -> str:
    """Who a Gradio event acts for: the same decision as every other door (callers.Callers)."""
    return studio.callers.account_for(request.headers)


def address_of(request: gr.Request) -> str | None:
    """The client's address, as the per-address limits count it."""
    client = request.client
    return client.host if client is not None else None
