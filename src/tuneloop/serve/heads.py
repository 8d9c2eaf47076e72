"""uvicorn's httptools protocol with a deadline and a size bound on request heads (`tuneloop serve`).

uvicorn times a connection out only between requests, and any byte that arrives cancels that timer: a client
that opens connections and sends nothing, or a header line now and then, holds them for good, and once
`limit_concurrency` are held every tenant's request is answered 503. httptools itself buffers a header or
trailer of any length. (uvicorn's h11 protocol bounds the size but not the time, and parses in Python: a
capture request cost 40 % more CPU through it.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadTooLarge(Exception):
    """Raised inside httptools' callbacks to stop the parser at a head over the bound."""


def bounded_heads(seconds: float, max_bytes: int) -> Callable[..., asyncio.Protocol]:
    """The protocol factory for uvicorn's `http`: a connection that takes over `seconds` to send its next
    request line and headers (or the rest of a body already answered) is closed, and one that sends a head
    or trailer over `max_bytes` is answered 431. A module-level class behind a partial, so that uvicorn can
    hand it to worker processes (`tuneloop serve --workers`)."""
    return partial(BoundedHeadProtocol, head_seconds=seconds, max_head_bytes=max_bytes)


class BoundedHeadProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with the head deadline and size bound of `bounded_heads`."""

    deadline: asyncio.TimerHandle | None = None
    awaiting_head = True  # the next bytes from the client belong to a request line or headers
    unparsed = 0  # bytes received while awaiting a head: one trickled over many reads
    parsed = 0  # the current head's request line and headers as parsed: one sent whole
    not_body = 0  # bytes received inside a message since its last body data: chunk lines, trailers

    def __init__(self, *args: Any, head_seconds: float, max_head_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_seconds = head_seconds
        self.max_head_bytes = max_head_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        if self.awaiting_head:
            self.unparsed += len(data)
        else:
            self.not_body += len(data)
        super().data_received(data)
        if (self.unparsed if self.awaiting_head else self.not_body) > self.max_head_bytes:
            self._refuse_head()

    def on_message_begin(self) -> None:
        self.parsed = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # as sent: ": " and the line's end
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self.not_body = 0
        super().on_body(body)

    def _count(self, size: int) -> None:
        self.parsed += size
        if self.parsed > self.max_head_bytes:
            raise HeadTooLarge  # stops the parser; uvicorn answers through send_400_response

    def send_400_response(self, msg: str) -> None:
        if self.parsed > self.max_head_bytes:  # the parser stopped at HeadTooLarge
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        if self._idle():  # else a 431 would read as the answer to the request still in progress
            self.transport.write(TOO_LARGE)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self.awaiting_head, self.unparsed, self.not_body = False, 0, 0
        self._stop_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.awaiting_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next head has as long, and so has the rest of a body answered early (a 401 or 413 does not
        # read it): each late byte of it would cancel the keep-alive timer, holding the slot.
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """No request of this connection is being answered or waits to be."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _start_deadline(self) -> None:
        self._stop_deadline()
        # A pipelined request already read is being answered: its answer starts the deadline again.
        if self._idle() and not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.head_seconds, self._deadline_passed)

    def _stop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _deadline_passed(self) -> None:
        self.deadline = None
        if self._idle() and not self.transport.is_closing():
            self.transport.close()
