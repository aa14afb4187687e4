"""JSON responses shared by the handlers, and the error responses each route documents."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from aragora.control_plane.health import HealthCheck, HealthReport, HealthStatus
from aragora.control_plane.models import AgentInfo, Task
from aragora.control_plane.serialization import agent_to_dict, task_to_dict
from aragora.server.rendering import SafeJSONResponse
from aragora.server.schemas import Problem

HEALTH_MEDIA_TYPE = "application/health+json"


class HealthJSONResponse(SafeJSONResponse):
    """The draft health check format: ``application/health+json``."""

    media_type = HEALTH_MEDIA_TYPE


_PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or invalid API token (one generic message whatever the reason)",
    404: "No such object in this workspace",
    409: "The request conflicts with the current state (lease lost, task cancelled, ...)",
    413: "Request body, payload, metadata or result too large",
    402: "The workspace budget for the period cannot cover the task",
    415: "The body is not sent as application/json",
    422: "A field failed validation; the body names it",
    403: "Forbidden by the role, a workspace rule or agent ownership (type forbidden), "
    "or a workspace limit is reached (type quota-exceeded, naming the quota)",
    429: "A rate limit is used up; retry after Retry-After seconds",
    503: "The store is unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem+json answers with these statuses.

    Every authenticated route may also answer 401, 403 and 503, which are always added.
    FastAPI documents them as ``application/json``; the app's OpenAPI hook moves every
    4xx and 5xx body to ``application/problem+json``.
    """
    return {
        status: {"model": Problem, "description": _PROBLEM_DESCRIPTIONS.get(status, "Error")}
        for status in sorted({*statuses, 401, 403, 503})
    }


BODY_PROBLEMS = (400, 413, 415, 422)


def task_response(
    task: Task, *, status_code: int = 200, include_lease: bool = False
) -> SafeJSONResponse:
    body = task_to_dict(task, include_lease=include_lease)
    return SafeJSONResponse(body, status_code=status_code)


def agent_response(agent: AgentInfo, *, status_code: int = 200) -> SafeJSONResponse:
    return SafeJSONResponse(agent_to_dict(agent), status_code=status_code)


def health_response(report: HealthReport) -> Response:
    """A report as ``application/health+json``; 503 when it fails."""
    checks: dict[str, list[dict[str, object]]] = {}
    for check in report.checks:
        checks.setdefault(check.component, []).append(_check_to_dict(check))
    body = {"status": report.status.value, "description": "aragora control plane", "checks": checks}
    status_code = 503 if report.status is HealthStatus.FAIL else 200
    return HealthJSONResponse(body, status_code=status_code)


def _check_to_dict(check: HealthCheck) -> dict[str, object]:
    out: dict[str, object] = {"status": check.status.value}
    if check.observed_value is not None:
        out["observedValue"] = check.observed_value
    if check.observed_unit is not None:
        out["observedUnit"] = check.observed_unit
    if check.output is not None:
        out["output"] = check.output
    if check.details:
        out["details"] = check.details
    return out
