"""Reject request bodies over a size limit before they are buffered.

A declared ``Content-Length`` over the limit is answered 413 without reading the
body. Otherwise the body is counted as it streams in, and the read that crosses the
limit fails with 413, so a body without a length (chunked) is never held in memory
beyond the limit either.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aragora.control_plane.config import ControlPlaneConfig
from aragora.server.problems import PAYLOAD_TOO_LARGE, problem

BODY_OVERHEAD_BYTES = 64 * 1024


def request_body_limit_bytes(config: ControlPlaneConfig) -> int:
    """Largest request body accepted: room for a payload and metadata at their limits.

    ``max_payload_bytes`` bounds the payload (and, separately, the metadata, or the
    result) measured as compact JSON; a client's JSON may be less compact, hence the
    factor of two and the fixed allowance for the other fields.
    """
    return 2 * config.max_payload_bytes + BODY_OVERHEAD_BYTES


class RequestBodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body crosses the limit; answered as 413."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class BodyLimitMiddleware:
    """Pure ASGI middleware enforcing ``max_body_bytes`` on HTTP request bodies."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise RequestBodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except RequestBodyTooLarge:
            # Normally answered by the app's exception handlers; this catches a read
            # made outside them.
            if response_started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            PAYLOAD_TOO_LARGE,
            "Payload too large",
            f"the request body is larger than {self.max_body_bytes} bytes",
            headers={"Connection": "close"},
            limit_bytes=self.max_body_bytes,
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    raw = Headers(scope=scope).get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
