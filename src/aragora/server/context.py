"""What the middlewares learn about a request and the handlers add to it.

One :class:`RequestContext` per request lives in the ASGI scope under
:data:`CONTEXT_KEY`. The outermost middleware (:mod:`aragora.server.audit`) creates it
with the correlation id and the client address; the tenancy middleware adds the
authenticated principal; handlers may name the object they acted on. The audit
middleware reads it back once the response is sent. The scope dict is shared by every
layer of the app, and the context is one mutable object, so every layer sees the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.requests import HTTPConnection
from starlette.types import Scope

from aragora.tenancy.models import Principal

CONTEXT_KEY: Final = "aragora.request"


@dataclass(slots=True)
class RequestContext:
    """Per-request facts shared by middlewares and handlers.

    ``principal`` is ``None`` until (and unless) a token authenticated; ``resource``
    names the object acted on for the audit trail (``"task:<id>"``), when the path
    alone does not say it (a submit learns its task id only from the store).
    """

    correlation_id: str = ""
    client_address: str | None = None
    principal: Principal | None = None
    resource: str | None = None


def request_context(scope: Scope) -> RequestContext:
    """The request's context, created on first use (so each middleware also works alone)."""
    context = scope.get(CONTEXT_KEY)
    if not isinstance(context, RequestContext):
        client = scope.get("client")
        context = RequestContext(client_address=str(client[0]) if client else None)
        scope[CONTEXT_KEY] = context
    return context


def set_audit_resource(connection: HTTPConnection, resource: str) -> None:
    """Name the object this request acted on, for its audit event."""
    request_context(connection.scope).resource = resource
