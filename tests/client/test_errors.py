"""Decoding of error answers, settings, and failures to reach a server (no server needed)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from aragora.audit import AuditIntegrityError
from aragora.client import (
    AsyncControlPlaneClient,
    AuthenticationError,
    ControlPlaneClient,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServerUnreachableError,
    error_from_response,
    resolve_token,
    resolve_url,
)
from aragora.control_plane import (
    AgentNotFoundError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.policy import RuleNotFoundError
from aragora.tenancy import TokenNotFoundError, WorkspaceExistsError, WorkspaceNotFoundError


def _problem(status: int, name: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "type": f"urn:aragora:problem:{name}" if name else "about:blank",
        "title": "t",
        "status": status,
        "detail": extra.pop("detail", "something is wrong"),
        **extra,
    }
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.mark.parametrize(
    ("response", "kwargs", "expected"),
    [
        (_problem(404, "task-not-found"), {"task_id": "t1"}, TaskNotFoundError),
        (_problem(404, "agent-not-found"), {"task_id": "t1", "agent_id": "a"}, AgentNotFoundError),
        (_problem(404), {"agent_id": "a"}, AgentNotFoundError),
        (_problem(404), {}, NotFoundError),
        (_problem(409, "lease-lost"), {"task_id": "t1"}, LeaseLostError),
        (_problem(409, "task-cancelled"), {"task_id": "t1"}, TaskCancelledError),
        (_problem(409, "invalid-state"), {"task_id": "t1"}, InvalidStateError),
        (_problem(409), {"conflict": "lease"}, LeaseLostError),
        (_problem(409), {"conflict": "state"}, InvalidStateError),
        (_problem(409, "conflict"), {"conflict": "lease"}, ConflictError),
        (_problem(404, "workspace-not-found"), {}, WorkspaceNotFoundError),
        (_problem(404), {"target": ("workspace", "w")}, WorkspaceNotFoundError),
        (_problem(404, "token-not-found"), {"target": ("token", "tok_1")}, TokenNotFoundError),
        (_problem(404, "rule-not-found"), {"target": ("rule", "r")}, RuleNotFoundError),
        (
            _problem(409, "conflict"),
            {"conflict": "exists", "target": ("workspace", "w")},
            WorkspaceExistsError,
        ),
        (_problem(409, "conflict"), {"target": ("workspace", "w")}, ConflictError),
        (_problem(409, "audit-chain-damaged", seq=3), {}, AuditIntegrityError),
        (_problem(401, "unauthorized"), {}, AuthenticationError),
        (_problem(403, "forbidden"), {}, PermissionDeniedError),
        (_problem(403), {}, PermissionDeniedError),
        (_problem(403, "quota-exceeded"), {}, QuotaExceededError),
        (_problem(402, "budget-exceeded"), {}, BudgetExceededError),
        (_problem(429, "rate-limited"), {}, RateLimitedError),
        (_problem(503, "store-unavailable"), {}, StoreUnavailableError),
        (_problem(500, "internal-error"), {}, ServerError),
        (httpx.Response(502, text="bad gateway"), {}, ServerError),
    ],
)
def test_problems_map_onto_the_exception_tree(
    response: httpx.Response, kwargs: dict[str, Any], expected: type[ControlPlaneError]
) -> None:
    assert type(error_from_response(response, **kwargs)) is expected


def test_validation_problems_name_the_field() -> None:
    ours = error_from_response(
        _problem(422, "validation-error", errors=[{"field": "priority", "reason": "unknown"}])
    )
    assert isinstance(ours, ValidationError)
    assert (ours.field, ours.reason) == ("priority", "unknown")

    too_big = error_from_response(_problem(413, "payload-too-large", field="payload"))
    assert isinstance(too_big, ValidationError) and too_big.field == "payload"

    fastapi_shape = httpx.Response(
        422, json={"detail": [{"loc": ["body", "wait_s"], "msg": "too large"}]}
    )
    theirs = error_from_response(fastapi_shape)
    assert isinstance(theirs, ValidationError)
    assert (theirs.field, theirs.reason) == ("wait_s", "too large")


def test_server_error_keeps_status_and_problem() -> None:
    error = error_from_response(_problem(500, "internal-error", detail="logged"))
    assert isinstance(error, ServerError)
    assert error.status == 500 and error.detail == "logged"
    assert error.problem["type"] == "urn:aragora:problem:internal-error"


def test_settings_come_from_arguments_then_environment() -> None:
    env = {"ARAGORA_URL": "https://cp.example:9000/", "ARAGORA_TOKEN": "tok"}
    assert resolve_url(None, env) == "https://cp.example:9000"
    assert resolve_url("http://other:1", env) == "http://other:1"
    assert resolve_url(None, {}) == "http://127.0.0.1:8080"
    assert resolve_token(None, env) == "tok"
    assert resolve_token(None, {"ARAGORA_TOKEN": ""}) is None
    with pytest.raises(ConfigError):
        resolve_url("ftp://nope", {})


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_sync_client_reports_an_unreachable_server() -> None:
    url = _closed_port_url()
    with ControlPlaneClient(url, timeout_s=2) as cp, pytest.raises(ServerUnreachableError) as e:
        cp.get_task("t1")
    assert e.value.url == url
    assert str(e.value).startswith(f"cannot reach the control plane at {url}")


async def test_async_client_reports_an_unreachable_server() -> None:
    async with AsyncControlPlaneClient(_closed_port_url(), timeout_s=2) as cp:
        with pytest.raises(ServerUnreachableError):
            await cp.wait_for_result("t1", 5)


def test_bad_waits_are_rejected_before_any_request() -> None:
    with ControlPlaneClient(_closed_port_url()) as cp:
        with pytest.raises(ValidationError) as negative:
            cp.wait_for_task("t1", -1)
        assert negative.value.field == "timeout_s"
        with pytest.raises(ValidationError):
            cp.claim_task("a", wait_s=float("nan"))


def test_not_found_errors_name_the_object_asked_about() -> None:
    missing = error_from_response(_problem(404, "workspace-not-found"), target=("workspace", "w"))
    assert isinstance(missing, WorkspaceNotFoundError) and missing.name == "w"
    revoked = error_from_response(_problem(404, "token-not-found"), target=("token", "tok_9"))
    assert isinstance(revoked, TokenNotFoundError) and revoked.token_id == "tok_9"
    exists = error_from_response(
        _problem(409, "conflict"), conflict="exists", target=("workspace", "w")
    )
    assert isinstance(exists, WorkspaceExistsError) and exists.name == "w"


def test_forbidden_keeps_the_reason_and_the_rules() -> None:
    error = error_from_response(
        _problem(403, "forbidden", detail="denied by rule", reason="x", rule_ids=["no-exec"])
    )
    assert isinstance(error, PermissionDeniedError)
    assert (error.status, error.detail, error.rule_ids) == (403, "denied by rule", ("no-exec",))
    assert not isinstance(error, AuthenticationError)


@pytest.mark.parametrize(
    ("headers", "extra", "expected_s"),
    [
        ({"Retry-After": "7"}, {"retry_after_s": 6.25}, 6.25),
        ({"Retry-After": "7"}, {}, 7.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}, 0.0),
        ({"Retry-After": "soon"}, {}, 1.0),
        ({}, {}, 1.0),
    ],
)
def test_rate_limited_carries_retry_after(
    headers: dict[str, str], extra: dict[str, Any], expected_s: float
) -> None:
    response = _problem(429, "rate-limited", detail="max_submits_per_minute used up", **extra)
    response.headers.update(headers)
    error = error_from_response(response)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after_s == expected_s
    assert error.status == 429
    # A ServerError, so callers that back off on transient answers (the agent SDK) retry.
    assert isinstance(error, ServerError)
    assert str(error).startswith("rate limited: max_submits_per_minute used up")
