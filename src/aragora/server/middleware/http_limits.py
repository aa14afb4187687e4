"""Connection-level limits that uvicorn does not enforce: head size and read deadlines.

uvicorn's h11 protocol arms its keep-alive timer only after a response, so a client
that connects and then sends its request head a byte at a time (slowloris), or never
finishes a body it announced, holds a connection and a file descriptor for as long as
it likes. Its 16 KiB head limit only applies to a head split over several reads; one
that arrives in a single read is accepted at any size. :func:`limited_h11_protocol`
returns the h11 protocol class with these limits added:

* the request head must be complete within ``header_timeout_s`` of the connection
  opening or of the previous response; a client that sent part of a head is answered
  ``408 Request Timeout``, an idle one is closed without a word;
* an announced body must be complete within ``body_timeout_s`` of its head; otherwise
  the connection is closed, and the handler reading it sees the client as gone;
* a head over ``max_head_bytes`` is answered ``431 Request Header Fields Too Large``.

Each answer is a plain response with ``Connection: close``: there is no request yet for
the app to answer as problem+json. A request that is complete (a long-poll waiting for
its result, say) is not timed by any of these.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from aragora.control_plane.errors import ConfigError

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
"""Room for the largest body accepted (a few MiB) over a slow link."""
DEFAULT_MAX_HEAD_BYTES = 32 * 1024
"""Request line and headers together; tokens and ids are far smaller."""

_HEAD_END = b"\r\n\r\n"


def _plain_response(status: int, reason: str) -> bytes:
    body = reason.encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii") + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head size limit and head and body read deadlines.

    Use :func:`limited_h11_protocol` to choose the limits; the class attributes are
    the defaults.
    """

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._reading_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._refuse(431, "Request Header Fields Too Large")
            return
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow_request_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            # Keep-alive: the next head gets the same allowance as the first.
            self._await_head()

    def _head_too_large(self, data: bytes) -> bool:
        buffered, _ = self.conn.trailing_data
        head = buffered + data if buffered else data
        end = head.find(_HEAD_END)
        head_bytes = len(head) if end < 0 else end + len(_HEAD_END)
        return head_bytes > self.max_head_bytes

    def _follow_request_state(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE:
            return
        if state is h11.SEND_BODY:
            if not self._reading_body:
                self._reading_body = True
                self._set_deadline(self.body_timeout_s)
            return
        # The request is complete (or the connection is ending): no deadline applies.
        self._cancel_deadline()

    def _await_head(self) -> None:
        self._reading_body = False
        self._set_deadline(self.header_timeout_s)

    def _set_deadline(self, timeout_s: float) -> None:
        self._cancel_deadline()
        self._read_deadline = self.loop.call_later(timeout_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _deadline_passed(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            buffered, _ = self.conn.trailing_data
            if buffered.strip():
                self._refuse(408, "Request Timeout")
                return
        # Idle, or a body that stopped arriving: the app (if any) sees a disconnect.
        self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        self._cancel_deadline()
        self.logger.info("refused a request: %d %s", status, reason)
        self.transport.write(_plain_response(status, reason))
        self.transport.close()


def limited_h11_protocol(
    *,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
) -> type[LimitedH11Protocol]:
    """The protocol class to pass as uvicorn's ``http`` setting, with these limits."""
    if header_timeout_s <= 0 or body_timeout_s <= 0 or max_head_bytes <= 0:
        raise ConfigError("HTTP header and body timeouts and the head size must be above 0")
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_head_bytes": max_head_bytes,
        },
    )
