"""RFC 9457 problem details: the body of every error response of the server.

Every error is ``application/problem+json`` with ``type``, ``title``, ``status`` and
``detail``. Clients branch on ``type``; ``title`` and ``detail`` are for people.
Validation problems also carry ``field`` (the first offending field) and ``errors``
(every offending field with its reason); a payload, metadata or result over the limit
adds ``size_bytes`` and ``limit_bytes``, a request body over the limit ``limit_bytes``.
Quota problems add ``quota``, ``limit`` and ``current``; budget problems ``limit``,
``used`` (spent and reserved) and ``estimate``; rate limits ``quota``, ``limit``,
``scope`` (``workspace`` or ``token``) and ``retry_after_s``; refusals ``reason`` and
``rule_ids`` (the workspace rules that denied)::

    type                                   status  when
    urn:aragora:problem:malformed-json     400     the body is not valid JSON
    urn:aragora:problem:unauthorized       401     missing, unknown, expired or revoked token
                                                   (one generic message for all)
    urn:aragora:problem:forbidden          403     the role or a workspace rule denies it, the
                                                   token may not act as that agent, or
                                                   X-Workspace-ID names another workspace
    urn:aragora:problem:task-not-found     404     no such task in the workspace
    urn:aragora:problem:agent-not-found    404     no such agent in the workspace
    urn:aragora:problem:workspace-not-found 404    no such workspace (or not one of yours)
    urn:aragora:problem:token-not-found    404     no such token (or not one of yours)
    urn:aragora:problem:rule-not-found     404     no such access rule in the workspace
    urn:aragora:problem:flag-not-found     404     no such feature flag in the workspace
    urn:aragora:problem:lease-lost         409     complete/fail with a stale or wrong lease token
    urn:aragora:problem:task-cancelled     409     complete/fail of a task cancelled meanwhile
    urn:aragora:problem:invalid-state      409     e.g. retry of a task that is not failed
    urn:aragora:problem:conflict           409     e.g. a workspace of that name exists
    urn:aragora:problem:audit-chain-damaged 409    the stored audit trail cannot be read
    urn:aragora:problem:budget-exceeded    402     the workspace budget cannot cover the task
    urn:aragora:problem:payload-too-large  413     request body, payload, metadata or result too big
                                                   (also the workspace's payload quota)
    urn:aragora:problem:quota-exceeded     403     a workspace limit (agents, pending or running
                                                   tasks) is reached; it names quota, limit, current
    urn:aragora:problem:unsupported-media-type 415 a body that is not sent as application/json
    urn:aragora:problem:validation-error   422     a field failed validation
    urn:aragora:problem:rate-limited       429     a per-minute limit is used up; Retry-After
    urn:aragora:problem:internal-error     500     a bug; details are logged, never sent
    urn:aragora:problem:decryption-failed  500     stored task data does not decrypt with the
                                                   server's keys (a server-side key problem)
    urn:aragora:problem:store-unavailable  503     the store could not be reached; retry later
    about:blank                            404/405 unknown route, method not allowed

A reached limit answers 403 (retrying the same request does not help until something
else changes) and a spent budget 402; 429 is kept for rate limits, which carry a
``Retry-After``.

The types are URNs rather than URLs because no documentation is served at a stable
address yet; they are identifiers, not links.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final, TypedDict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from aragora.audit.base import AuditIntegrityError
from aragora.control_plane.errors import (
    AgentNotFoundError,
    BudgetExceededError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.crypto import DecryptionError
from aragora.policy.store import FlagNotFoundError, RuleNotFoundError
from aragora.server.errors import ForbiddenError, RateLimitedError
from aragora.server.rendering import SafeJSONResponse
from aragora.tenancy.errors import (
    AUTHENTICATION_FAILED_MESSAGE,
    AuthenticationError,
    TokenNotFoundError,
    WorkspaceNotFoundError,
)

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:aragora:problem:"

MALFORMED_JSON: Final = TYPE_PREFIX + "malformed-json"
UNAUTHORIZED: Final = TYPE_PREFIX + "unauthorized"
FORBIDDEN: Final = TYPE_PREFIX + "forbidden"
RATE_LIMITED: Final = TYPE_PREFIX + "rate-limited"
TASK_NOT_FOUND: Final = TYPE_PREFIX + "task-not-found"
AGENT_NOT_FOUND: Final = TYPE_PREFIX + "agent-not-found"
WORKSPACE_NOT_FOUND: Final = TYPE_PREFIX + "workspace-not-found"
TOKEN_NOT_FOUND: Final = TYPE_PREFIX + "token-not-found"
RULE_NOT_FOUND: Final = TYPE_PREFIX + "rule-not-found"
FLAG_NOT_FOUND: Final = TYPE_PREFIX + "flag-not-found"
AUDIT_CHAIN_DAMAGED: Final = TYPE_PREFIX + "audit-chain-damaged"
DECRYPTION_FAILED: Final = TYPE_PREFIX + "decryption-failed"
NOT_FOUND: Final = TYPE_PREFIX + "not-found"
LEASE_LOST: Final = TYPE_PREFIX + "lease-lost"
TASK_CANCELLED: Final = TYPE_PREFIX + "task-cancelled"
INVALID_STATE: Final = TYPE_PREFIX + "invalid-state"
CONFLICT: Final = TYPE_PREFIX + "conflict"
PAYLOAD_TOO_LARGE: Final = TYPE_PREFIX + "payload-too-large"
UNSUPPORTED_MEDIA_TYPE: Final = TYPE_PREFIX + "unsupported-media-type"
VALIDATION_ERROR: Final = TYPE_PREFIX + "validation-error"
INTERNAL_ERROR: Final = TYPE_PREFIX + "internal-error"
STORE_UNAVAILABLE: Final = TYPE_PREFIX + "store-unavailable"
QUOTA_EXCEEDED: Final = TYPE_PREFIX + "quota-exceeded"
BUDGET_EXCEEDED: Final = TYPE_PREFIX + "budget-exceeded"
ABOUT_BLANK: Final = "about:blank"

_HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


class FieldError(TypedDict):
    """One rejected field: dotted name (list items as ``[i]``) and a readable reason."""

    field: str
    reason: str


class ProblemResponse(SafeJSONResponse):
    """A JSON response served as ``application/problem+json``."""

    media_type = PROBLEM_MEDIA_TYPE


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """Build a problem response; ``extensions`` become extra members of the body."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return ProblemResponse(body, status_code=status, headers=headers)


def validation_problem(
    errors: Sequence[FieldError],
    *,
    status: int = 422,
    type_: str = VALIDATION_ERROR,
    title: str = "Invalid request",
    **extensions: Any,
) -> ProblemResponse:
    """A problem naming every rejected field; ``field`` repeats the first for simple clients."""
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    first = errors[0]["field"] if errors else "body"
    return problem(status, type_, title, detail, field=first, errors=list(errors), **extensions)


# Order matters: the first class the error is an instance of decides.
_ERROR_PROBLEMS: tuple[tuple[type[ControlPlaneError], int, str, str], ...] = (
    (PayloadTooLargeError, 413, PAYLOAD_TOO_LARGE, "Payload too large"),
    (ValidationError, 422, VALIDATION_ERROR, "Invalid request"),
    (TaskNotFoundError, 404, TASK_NOT_FOUND, "Task not found"),
    (AgentNotFoundError, 404, AGENT_NOT_FOUND, "Agent not found"),
    (WorkspaceNotFoundError, 404, WORKSPACE_NOT_FOUND, "Workspace not found"),
    (TokenNotFoundError, 404, TOKEN_NOT_FOUND, "Token not found"),
    (RuleNotFoundError, 404, RULE_NOT_FOUND, "Rule not found"),
    (FlagNotFoundError, 404, FLAG_NOT_FOUND, "Flag not found"),
    (NotFoundError, 404, NOT_FOUND, "Not found"),
    (LeaseLostError, 409, LEASE_LOST, "Lease lost"),
    (TaskCancelledError, 409, TASK_CANCELLED, "Task cancelled"),
    (InvalidStateError, 409, INVALID_STATE, "Invalid state"),
    (ConflictError, 409, CONFLICT, "Conflict"),
)


def problem_for_error(exc: ControlPlaneError) -> ProblemResponse:
    """Translate an error of the control plane into its problem response."""
    if isinstance(exc, StoreUnavailableError):
        logger.warning("store unavailable: %s", exc)
        return problem(
            503,
            STORE_UNAVAILABLE,
            "Store unavailable",
            "the control plane store could not be reached; try again shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, ForbiddenError):
        return problem(
            403, FORBIDDEN, "Forbidden", exc.reason, reason=exc.reason, rule_ids=list(exc.rule_ids)
        )
    if isinstance(exc, RateLimitedError):
        return problem(
            429,
            RATE_LIMITED,
            "Rate limited",
            str(exc),
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            quota=exc.quota,
            limit=exc.limit,
            scope=exc.scope,
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, AuthenticationError):
        logger.info("authentication failed: %s", exc.reason)
        return problem(
            401,
            UNAUTHORIZED,
            "Unauthorized",
            AUTHENTICATION_FAILED_MESSAGE,
            headers={"WWW-Authenticate": 'Bearer realm="aragora"'},
        )
    if isinstance(exc, DecryptionError):
        # The message names the task and field, never key material.
        logger.error("stored task data could not be decrypted: %s", exc)
        return problem(
            500,
            DECRYPTION_FAILED,
            "Stored data could not be decrypted",
            "the server could not decrypt stored task data with its keys; "
            "an operator must check the encryption keys",
        )
    if isinstance(exc, AuditIntegrityError):
        logger.error("audit chain damaged: %s", exc)
        return problem(409, AUDIT_CHAIN_DAMAGED, "Audit chain damaged", str(exc), seq=exc.seq)
    if isinstance(exc, QuotaExceededError):
        return _quota_problem(exc)
    if isinstance(exc, BudgetExceededError):
        return problem(
            402,
            BUDGET_EXCEEDED,
            "Budget exceeded",
            str(exc),
            limit=exc.limit,
            used=exc.used,
            estimate=exc.estimate,
        )
    for cls, status, type_, title in _ERROR_PROBLEMS:
        if isinstance(exc, cls):
            if isinstance(exc, ValidationError):
                sizes = (
                    {"size_bytes": exc.size_bytes, "limit_bytes": exc.limit_bytes}
                    if isinstance(exc, PayloadTooLargeError)
                    else {}
                )
                return validation_problem(
                    [FieldError(field=exc.field, reason=exc.reason)],
                    status=status,
                    type_=type_,
                    title=title,
                    **sizes,
                )
            return problem(status, type_, title, str(exc))
    return internal_error_problem()


def _quota_problem(exc: QuotaExceededError) -> ProblemResponse:
    if exc.quota == "max_payload_bytes":
        # The workspace's own payload limit: the same answer as the deployment's.
        size, limit = int(exc.current), int(exc.limit)
        reason = f"is {size} bytes encoded, over the workspace limit of {limit} bytes"
        return validation_problem(
            [FieldError(field="payload", reason=reason)],
            status=413,
            type_=PAYLOAD_TOO_LARGE,
            title="Payload too large",
            size_bytes=size,
            limit_bytes=limit,
        )
    return problem(
        403,
        QUOTA_EXCEEDED,
        "Quota exceeded",
        str(exc),
        quota=exc.quota,
        limit=exc.limit,
        current=exc.current,
    )


def internal_error_problem() -> ProblemResponse:
    """A 500 that reveals nothing of the error; the caller logs it."""
    return problem(
        500,
        INTERNAL_ERROR,
        "Internal server error",
        "the server failed to handle the request; the error has been logged",
    )


def field_name(loc: Sequence[int | str]) -> str:
    """``("body", "metadata", "a", 0)`` -> ``"metadata.a[0]"``; the location itself is dropped."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name = f"{name}.{part}" if name else str(part)
    return name or "body"


def _reason(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in _NOT_AN_OBJECT:
        return "must be a JSON object"
    if kind == "value_error":
        ctx = error.get("ctx") or {}
        if "error" in ctx:
            return str(ctx["error"])
    return str(error.get("msg", "is invalid"))


def request_validation_problem(request: Request, exc: RequestValidationError) -> ProblemResponse:
    """422 naming each field; 400 for a body that is not JSON; 415 for a non-JSON media type."""
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            ctx = error.get("ctx") or {}
            loc = error.get("loc", ())
            position = loc[1] if len(loc) > 1 else 0
            reason = f"is not valid JSON: {ctx.get('error', 'decode error')} at position {position}"
            return validation_problem(
                [FieldError(field="body", reason=reason)],
                status=400,
                type_=MALFORMED_JSON,
                title="Malformed JSON",
            )
    for error in errors:
        if (
            tuple(error.get("loc", ())) == ("body",)
            and error.get("type") in _NOT_AN_OBJECT
            and isinstance(error.get("input"), bytes)
        ):
            return validation_problem(
                [FieldError(field="body", reason="must be sent as Content-Type: application/json")],
                status=415,
                type_=UNSUPPORTED_MEDIA_TYPE,
                title="Unsupported media type",
            )
    fields = [FieldError(field=field_name(e.get("loc", ())), reason=_reason(e)) for e in errors]
    return validation_problem(fields)


def http_exception_problem(exc: StarletteHTTPException) -> Response:
    """Plain HTTP errors raised by routing and body parsing, as problems."""
    headers = dict(exc.headers or {})
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    if exc.status_code == 413:
        # RequestBodyTooLarge of the body limit middleware says which limit was crossed.
        limit = getattr(exc, "limit_bytes", None)
        extensions = {"limit_bytes": limit} if isinstance(limit, int) else {}
        return problem(
            413,
            PAYLOAD_TOO_LARGE,
            "Payload too large",
            str(exc.detail),
            headers=headers,
            **extensions,
        )
    if exc.status_code == 400:
        # FastAPI raises this when the body cannot be read as JSON at all (bad encoding,
        # nesting too deep, numbers too long).
        return validation_problem(
            [FieldError(field="body", reason="could not be parsed as JSON")],
            status=400,
            type_=MALFORMED_JSON,
            title="Malformed JSON",
        )
    title = _status_phrase(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
    return problem(exc.status_code, ABOUT_BLANK, title, detail, headers=headers)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _handle_control_plane_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlPlaneError)
    response = problem_for_error(exc)
    if response.status_code == 500:
        logger.error("unexpected control plane error", exc_info=exc)
    return response


async def _handle_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return request_validation_problem(request, exc)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    response = http_exception_problem(exc)
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path only; FastAPI makes
        # a route per method, so the others would be missing from Allow.
        allowed = allowed_methods(request)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def allowed_methods(request: Request) -> list[str]:
    """The methods of the documented path the request's path matched, sorted.

    Taken from the OpenAPI document (FastAPI's included routers do not expose their
    routes). When several templates fit, the most literal wins: ``/agents/register``
    also fits ``/agents/{agent_id}``, but ``Allow`` speaks of the operation meant."""
    path = request.scope.get("path", "")
    best: tuple[int, Mapping[str, Any]] | None = None
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path) is None:
            continue
        literal = sum(1 for part in template.split("/") if part and not part.startswith("{"))
        if best is None or literal > best[0]:
            best = (literal, operations)
    if best is None:
        return []
    return sorted(method.upper() for method in best[1] if method.upper() in _HTTP_METHODS)


async def handle_unexpected_error(request: Request, exc: Exception) -> Response:
    """Last resort: 500 without any detail of the error (the server logs the traceback)."""
    return internal_error_problem()


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error the app can raise to its problem response."""
    app.add_exception_handler(ControlPlaneError, _handle_control_plane_error)
    app.add_exception_handler(RequestValidationError, _handle_request_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)
