"""Who is calling, and in which workspace they act.

:class:`TenancyMiddleware` turns ``Authorization: Bearer <token>`` into a
:class:`~aragora.tenancy.models.Principal` through
:meth:`~aragora.tenancy.service.TenancyService.authenticate` and keeps it in the
request's :class:`~aragora.server.context.RequestContext`. Handlers learn the workspace
only from :func:`current_workspace` (the principal's), never from a body or a query, so
a token of one workspace cannot reach another's objects.

Every refusal answers the same 401 body (:data:`AUTHENTICATION_FAILED_MESSAGE`),
whatever the reason: telling an unknown token from an expired or revoked one would help
someone probing with guessed or stolen tokens. The reason is logged; the token never is.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette import status
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from aragora.control_plane.errors import StoreUnavailableError
from aragora.server.context import request_context
from aragora.server.errors import ForbiddenError
from aragora.server.problems import UNAUTHORIZED, problem, problem_for_error
from aragora.server.services import require_services
from aragora.server.state import ServerState
from aragora.tenancy.errors import AUTHENTICATION_FAILED_MESSAGE, AuthenticationError
from aragora.tenancy.models import Principal
from aragora.tenancy.service import DEFAULT_WORKSPACE

__all__ = [
    "DEFAULT_WORKSPACE",
    "OPEN_PATHS",
    "WORKSPACE_HEADER",
    "TenancyMiddleware",
    "current_principal",
    "current_workspace",
]

logger = logging.getLogger(__name__)

OPEN_PATHS: Final = frozenset({"/livez", "/readyz", "/openapi.json", "/docs"})
"""Paths served without a token: probes for orchestrators, and the API description."""

WORKSPACE_HEADER: Final = "x-workspace-id"
"""Optional request header: a client's statement of the workspace it means to act in.
It never selects a workspace; one that differs from the token's is refused (403)."""

_CHALLENGE = 'Bearer realm="aragora"'
_INVALID_CHALLENGE = 'Bearer realm="aragora", error="invalid_token"'


async def current_principal(connection: HTTPConnection) -> Principal:
    """Dependency: the authenticated caller.

    The middleware lets no request without one reach a handler; reaching this without a
    principal means the route is open and must not ask for one.
    """
    principal = request_context(connection.scope).principal
    if principal is None:
        raise RuntimeError("no authenticated principal on this request (an open route?)")
    return principal


async def current_workspace(connection: HTTPConnection) -> str:
    """Dependency: the workspace the request acts in, the principal's own."""
    return (await current_principal(connection)).workspace_id


class TenancyMiddleware:
    """Pure ASGI middleware: authenticate every request but :data:`OPEN_PATHS`.

    Missing or invalid tokens get 401 problem+json with ``WWW-Authenticate: Bearer``
    (a WebSocket is closed with code 1008); a mismatching ``X-Workspace-ID`` gets 403.
    Before the app's services are built (no lifespan yet) every request gets 503.
    The body is never read before the token is checked.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _app_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        is_http = scope["type"] == "http"
        try:
            services = require_services(self.state)
        except StoreUnavailableError as exc:
            if is_http:
                await problem_for_error(exc)(scope, receive, send)
            else:
                await WebSocketClose(code=status.WS_1011_INTERNAL_ERROR)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        context = request_context(scope)
        presented = _bearer_token(headers.get("authorization"))
        try:
            if presented is None:
                raise AuthenticationError("malformed")
            principal = await services.tenancy.authenticate(presented)
        except AuthenticationError as exc:
            logger.info(
                "authentication failed (%s) for %s %s from %s",
                exc.reason,
                scope.get("method", "WEBSOCKET"),
                _app_path(scope),
                context.client_address,
            )
            if not is_http:
                await WebSocketClose(code=status.WS_1008_POLICY_VIOLATION)(scope, receive, send)
                return
            challenge = _CHALLENGE if presented is None else _INVALID_CHALLENGE
            response = problem(
                401,
                UNAUTHORIZED,
                "Unauthorized",
                AUTHENTICATION_FAILED_MESSAGE,
                headers={"WWW-Authenticate": challenge},
            )
            await response(scope, receive, send)
            return
        except StoreUnavailableError as exc:
            if is_http:
                await problem_for_error(exc)(scope, receive, send)
            else:
                await WebSocketClose(code=status.WS_1011_INTERNAL_ERROR)(scope, receive, send)
            return
        context.principal = principal
        stated = headers.get(WORKSPACE_HEADER)
        if stated is not None and stated != principal.workspace_id:
            if not is_http:
                await WebSocketClose(code=status.WS_1008_POLICY_VIOLATION)(scope, receive, send)
                return
            denied = ForbiddenError(
                "the X-Workspace-ID header names another workspace than the token's"
            )
            await problem_for_error(denied)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _app_path(scope: Scope) -> str:
    """The path below the mount point (servers behind a proxy prefix it with root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _bearer_token(header: str | None) -> str | None:
    """The token of a ``Bearer`` authorization header (scheme in any case), else None.

    Header values arrive decoded as latin-1; a token is ASCII, so anything else simply
    fails to authenticate.
    """
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
