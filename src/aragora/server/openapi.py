"""Final touches to the generated OpenAPI document.

FastAPI documents every response model as ``application/json``; errors are served as
``application/problem+json``, so their bodies are moved there. The document declares
bearer authentication (so ``/docs`` can send a token) on every operation except the
open probes, and OpenAPI links (:data:`LINKS`) from each operation that creates or
leases something to the operations that act on it: submit -> get, cancel, retry;
register -> get, heartbeat, claim, deregister; claim -> complete, fail (with the
lease token); create workspace -> get, update; put rule or flag -> delete (and
evaluate the flag); issue token -> revoke. Clients and generators can follow them,
and stateful API tests chain calls along them.
"""

from __future__ import annotations

from typing import Any

from aragora.server.middleware.tenancy import OPEN_PATHS
from aragora.server.problems import PROBLEM_MEDIA_TYPE

BEARER_SCHEME = "apiToken"
PROBLEM_SCHEMA = "Problem"
"""The component schema of problem+json bodies (:class:`aragora.server.schemas.Problem`)."""

_SUBMITTED_TASK = {"task_id": "$response.body#/task_id"}
_CLAIMED_TASK = {"task_id": "$response.body#/id"}
_AGENT = {"agent_id": "$response.body#/agent_id"}
_LEASE = {"lease_token": "$response.body#/lease_token"}
_WORKSPACE = {"name": "$response.body#/name"}


def _link(operation_id: str, description: str, **fields: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "description": description, **fields}


LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("submitTask", "201"): {
        "GetTask": _link("getTask", "The submitted task", parameters=_SUBMITTED_TASK),
        "CancelTask": _link("cancelTask", "Cancel the submitted task", parameters=_SUBMITTED_TASK),
        "RetryTask": _link("retryTask", "Retry the task once failed", parameters=_SUBMITTED_TASK),
    },
    ("registerAgent", "201"): {
        "GetAgent": _link("getAgent", "The registered agent", parameters=_AGENT),
        "GetAgentHealth": _link("getAgentHealth", "Its health", parameters=_AGENT),
        "Heartbeat": _link("heartbeat", "Keep it alive", parameters=_AGENT),
        "ClaimTask": _link("claimTask", "Claim a task as this agent", requestBody=_AGENT),
        "DeregisterAgent": _link("deregisterAgent", "Remove the agent", parameters=_AGENT),
    },
    ("claimTask", "200"): {
        "CompleteTask": _link(
            "completeTask",
            "Complete the claimed attempt",
            parameters=_CLAIMED_TASK,
            requestBody=_LEASE,
        ),
        "FailTask": _link(
            "failTask", "Fail the claimed attempt", parameters=_CLAIMED_TASK, requestBody=_LEASE
        ),
        "GetClaimedTask": _link("getTask", "The claimed task", parameters=_CLAIMED_TASK),
    },
    ("completeTask", "200"): {
        "GetCompletedTask": _link("getTask", "The completed task", parameters=_CLAIMED_TASK),
    },
    ("failTask", "200"): {
        "RetryFailedTask": _link("retryTask", "Retry the failed task", parameters=_CLAIMED_TASK),
    },
    ("createWorkspace", "201"): {
        "GetWorkspace": _link("getWorkspace", "The new workspace", parameters=_WORKSPACE),
        "UpdateWorkspace": _link("updateWorkspace", "Change its plan", parameters=_WORKSPACE),
    },
    ("putPolicy", "200"): {
        "DeletePolicy": _link(
            "deletePolicy",
            "Delete the rule",
            parameters={"rule_id": "$response.body#/rule_id"},
        ),
    },
    ("putFlag", "200"): {
        "EvaluateFlag": _link(
            "evaluateFlag", "Evaluate the flag", parameters={"key": "$response.body#/key"}
        ),
        "DeleteFlag": _link(
            "deleteFlag", "Delete the flag", parameters={"key": "$response.body#/key"}
        ),
    },
    ("issueToken", "201"): {
        "RevokeToken": _link(
            "revokeToken",
            "Revoke the new token",
            parameters={"token_id": "$response.body#/token_id"},
        ),
    },
}
"""OpenAPI links by (source operation id, status): what an answer lets a client do next."""


def finish_openapi(document: dict[str, Any]) -> None:
    """Adjust ``document`` in place."""
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            _add_links(operation)
            for status, response in operation.get("responses", {}).items():
                if status[:1] in ("4", "5"):
                    _serve_problems_as_problem_json(response.get("content") or {})
            if path not in OPEN_PATHS:
                operation["security"] = [{BEARER_SCHEME: []}]
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (acp_...) issued through /api/control-plane/tokens, "
        "or the bootstrap admin token (ARAGORA_ADMIN_TOKEN or <data-dir>/admin.token).",
    }


def _serve_problems_as_problem_json(content: dict[str, Any]) -> None:
    """Move a Problem body to problem+json, whatever media type the route's response
    class gave it (health routes document theirs as health+json); other error bodies,
    such as a failing health report, keep theirs."""
    for media_type, body in list(content.items()):
        reference = (body.get("schema") or {}).get("$ref", "")
        if media_type != PROBLEM_MEDIA_TYPE and reference.endswith("/" + PROBLEM_SCHEMA):
            content[PROBLEM_MEDIA_TYPE] = content.pop(media_type)


def _add_links(operation: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        links = LINKS.get((operation.get("operationId", ""), status))
        if links:
            response.setdefault("links", {}).update(links)
