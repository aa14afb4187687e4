"""Correlation ids and the audit trail of requests.

:class:`AuditMiddleware` is the outermost layer of the app. It gives every HTTP request
a correlation id (the client's ``X-Request-ID`` when it is a sane token, else a new
UUID), echoes it in the ``X-Request-ID`` response header, and once the response has
been sent appends one event to the workspace's audit chain for

* every mutating request (POST, PUT, PATCH, DELETE), whatever its status, and
* every refused one (401, 402, 403, 429), whatever its method.

An event names the principal (its token id; ``anonymous`` for a 401, recorded under
workspace ``default`` because no workspace is known), the action (the route's
:class:`~aragora.tenancy.models.Action`), the resource (``task:<id>``, ``agent:<id>``,
``token:<id>``, ...), the outcome (``allowed`` below 400, ``denied`` for refusals,
``error`` otherwise), the correlation id, the client address and ``{"status": ...}``.
Tokens, payloads and results never go into an event.

For the request's whole duration the correlation id is bound to the logging context
(:func:`aragora.observability.logging.bind_correlation_id`), so every log line written
while serving it carries ``correlation_id``. Once answered, the request is counted and
timed in the server's metrics by route *template* and status
(``aragora_http_requests_total``, ``aragora_http_request_duration_seconds``) and one
access line is logged on ``aragora.server.access`` (method, route template, status,
duration; never headers, so never a token).

The append runs after the last byte of the response was handed to the server, so it
adds no round trip in series with the answer, and appends of concurrent requests are
batched by :class:`~aragora.audit.log.AuditLog`. A failed append is logged and never
turns a served request into an error.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aragora.audit.events import (
    MAX_ACTION_LENGTH,
    MAX_CLIENT_ADDRESS_LENGTH,
    MAX_RESOURCE_LENGTH,
    Outcome,
)
from aragora.observability.logging import bind_correlation_id, reset_correlation_id
from aragora.server.authz import route_access
from aragora.server.context import RequestContext, request_context
from aragora.server.state import ServerState
from aragora.tenancy.service import DEFAULT_WORKSPACE

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("aragora.server.access")

REQUEST_ID_HEADER: Final = "X-Request-ID"
ANONYMOUS_PRINCIPAL: Final = "anonymous"
MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED_STATUSES: Final = frozenset({401, 402, 403, 429})
AUTHENTICATE_ACTION: Final = "authenticate"
"""The action of refusals made before routing: bad tokens, a mismatching workspace."""
UNROUTED_ACTION: Final = "unrouted"

_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")
_PATH_RESOURCES: Final = (
    ("task_id", "task"),
    ("agent_id", "agent"),
    ("token_id", "token"),
    ("rule_id", "rule"),
    ("key", "flag"),
    ("name", "workspace"),
)


def correlation_id(presented: str | None) -> str:
    """The client's request id when it is 1-128 safe characters, else a new UUID."""
    if presented is not None and _REQUEST_ID_RE.fullmatch(presented):
        return presented
    return uuid.uuid4().hex


def outcome_of(status: int) -> Outcome:
    """``allowed`` below 400, ``denied`` for refusals, ``error`` for the rest."""
    if status < 400:
        return Outcome.ALLOWED
    if status in REFUSED_STATUSES:
        return Outcome.DENIED
    return Outcome.ERROR


class AuditMiddleware:
    """Pure ASGI middleware: correlation ids and audit events (see the module docstring)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = request_context(scope)
        context.correlation_id = correlation_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        status = 500
        started = time.perf_counter()
        bound = bind_correlation_id(context.correlation_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = context.correlation_id
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                self._measure(scope, 500, started)
                await self._record(scope, context, 500)
                raise
            self._measure(scope, status, started)
            await self._record(scope, context, status)
        finally:
            reset_correlation_id(bound)

    def _measure(self, scope: Scope, status: int, started: float) -> None:
        """Count and time the answered request; log its access line."""
        duration_s = time.perf_counter() - started
        method = str(scope.get("method", ""))
        route = getattr(scope.get("route"), "path", None)
        template = route if isinstance(route, str) else None
        observability = self.state.observability
        if observability is not None:
            observability.metrics.record_http_request(method, template, status, duration_s)
        access_logger.info(
            "%s %s %d %.1fms",
            method,
            template or "<unmatched>",
            status,
            duration_s * 1000,
            extra={
                "http_method": method,
                "route": template,
                "status": status,
                "duration_ms": round(duration_s * 1000, 3),
            },
        )

    async def _record(self, scope: Scope, context: RequestContext, status: int) -> None:
        method = str(scope.get("method", "")).upper()
        if method not in MUTATING_METHODS and status not in REFUSED_STATUSES:
            return
        cp = self.state.coordinator
        if cp is None:
            return
        principal = context.principal
        try:
            await cp.audit.append(
                DEFAULT_WORKSPACE if principal is None else principal.workspace_id,
                principal=ANONYMOUS_PRINCIPAL if principal is None else principal,
                action=_action(scope, method, status),
                resource=(context.resource or _resource(scope))[:MAX_RESOURCE_LENGTH],
                outcome=outcome_of(status),
                correlation_id=context.correlation_id,
                client_address=_client_address(context),
                details={"status": status},
            )
        except Exception:
            logger.warning(
                "audit event of %s %s (status %d, request %s) could not be written",
                method,
                scope.get("path"),
                status,
                context.correlation_id,
                exc_info=True,
            )


def _action(scope: Scope, method: str, status: int) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        # Refused before routing: by the tenancy middleware.
        return AUTHENTICATE_ACTION if status in (401, 403) else UNROUTED_ACTION
    access = route_access(method, path)
    if access is None:
        return UNROUTED_ACTION
    if access.action is None:
        return path[:MAX_ACTION_LENGTH]
    return access.action.value


def _resource(scope: Scope) -> str:
    params = scope.get("path_params") or {}
    for name, kind in _PATH_RESOURCES:
        value = params.get(name)
        if isinstance(value, str) and value:
            return f"{kind}:{value}"
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else str(scope.get("path", ""))


def _client_address(context: RequestContext) -> str | None:
    address = context.client_address
    if not address:
        return None
    return address[:MAX_CLIENT_ADDRESS_LENGTH]
