"""Who is calling, and in which workspace they act.

Today there is one principal, the operator holding the admin token, and one
workspace, ``"default"``. Handlers learn the workspace only from
:func:`current_workspace`, never from the request body, so that per-workspace tokens
can later replace it in this one place: the middleware will resolve the token to a
principal and its workspace, and :func:`current_workspace` will read that.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette import status
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from aragora.server.problems import UNAUTHORIZED, problem

DEFAULT_WORKSPACE: Final = "default"

OPEN_PATHS: Final = frozenset({"/livez", "/readyz", "/openapi.json", "/docs"})
"""Paths served without a token: probes for orchestrators, and the API description."""

_REALM = 'Bearer realm="aragora"'


def current_workspace() -> str:
    """Dependency: the workspace the request acts in (always ``"default"`` for now)."""
    return DEFAULT_WORKSPACE


class AdminTokenMiddleware:
    """Pure ASGI middleware: with a token set, every path but :data:`OPEN_PATHS` needs
    ``Authorization: Bearer <token>``; otherwise 401 with ``WWW-Authenticate: Bearer``
    (a WebSocket is closed with code 1008 instead).

    Tokens are compared in constant time and never logged.
    """

    def __init__(self, app: ASGIApp, admin_token: str | None) -> None:
        if admin_token is not None and not admin_token:
            raise ValueError("admin_token must be non-empty when given")
        self.app = app
        self._expected = admin_token.encode() if admin_token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._expected is None
            or scope["type"] not in ("http", "websocket")
            or _app_path(scope) in OPEN_PATHS
        ):
            await self.app(scope, receive, send)
            return
        presented = _bearer_token(Headers(scope=scope).get("authorization"))
        if scope["type"] == "websocket":
            if presented is None or not hmac.compare_digest(presented, self._expected):
                await WebSocketClose(code=status.WS_1008_POLICY_VIOLATION)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if presented is None:
            await _unauthorized("this endpoint needs an Authorization: Bearer token", _REALM)(
                scope, receive, send
            )
            return
        if not hmac.compare_digest(presented, self._expected):
            await _unauthorized(
                "the bearer token is not valid", f'{_REALM}, error="invalid_token"'
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _app_path(scope: Scope) -> str:
    """The path below the mount point (servers behind a proxy prefix it with root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _bearer_token(header: str | None) -> bytes | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    # Header values arrive as latin-1; this recovers the bytes the client sent.
    return token.encode("latin-1")


def _unauthorized(detail: str, challenge: str) -> ASGIApp:
    return problem(
        401, UNAUTHORIZED, "Unauthorized", detail, headers={"WWW-Authenticate": challenge}
    )
