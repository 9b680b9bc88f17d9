"""The web's HTTP protocol: uvicorn's, with a deadline for reading each request, so slow clients let go."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def read_deadline_protocol(read_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing a connection that takes longer than `read_timeout_s` to send a
    whole request (headers and body), counted from when it connected or got its last response.

    uvicorn itself waits forever for a request that arrives a byte at a time: one client sending a byte
    every few seconds held 300 connections. A response may take as long as it likes (a video download,
    a page's event stream): the clock runs only while the server waits for the client.
    """

    class ReadDeadlineProtocol(HttpToolsProtocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_clock()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._start_clock()  # the next request's

        def connection_lost(self, exc: Exception | None) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
            super().connection_lost(exc)

        def _start_clock(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
            if not self.transport.is_closing():
                self.deadline = self.loop.call_later(read_timeout_s, self._past_deadline)

        def _past_deadline(self) -> None:
            # Still reading: no request yet, or the last one answered, or its body still coming.
            reading = self.cycle is None or self.cycle.response_complete or self.cycle.more_body
            if reading and not self.transport.is_closing():
                self.transport.close()

    return ReadDeadlineProtocol
