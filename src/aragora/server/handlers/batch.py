"""Batch routes for agents: claim several tasks, complete or fail several attempts, in
one request each.

Same rules as the single routes of :mod:`aragora.server.handlers.control_plane`: the
router authorizes from :data:`aragora.server.authz.ROUTE_ACCESS` (claim adds the
agent's capabilities for workspace rules), an agent token acts only as its own agents,
every item acts in the caller's workspace. Each item stays its own atomic transition,
fenced by its own lease token: a refused item (another workspace's or unknown task
404, stale lease or cancelled task 409) is answered in its place and changes nothing,
the others go through. A malformed item refuses the whole request (422 naming
``items[i].<field>``) before anything is written.

``claim-batch`` answers 200 with the leased tasks (possibly none); complete and fail
answer 200 with ``results``: one per item, in order, each ``{"task_id", "status",
"task"}`` or ``{"task_id", "status", "problem"}`` (the problem+json body the single
route would have answered).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.models import Task
from aragora.control_plane.serialization import task_to_dict
from aragora.server.authz import API_PREFIX, RouteGuard, authorize_route, ensure_acts_as_agent
from aragora.server.context import set_audit_resource
from aragora.server.handlers.control_plane import Caller, Coordinator, State, Svc, Workspace
from aragora.server.handlers.responses import BODY_PROBLEMS, problem_responses
from aragora.server.longpoll import SHUTDOWN, long_poll
from aragora.server.problems import problem_for_error
from aragora.server.rendering import SafeJSONResponse
from aragora.server.schemas import (
    MAX_LEASE_TOKEN_LENGTH,
    MAX_TASK_ID_LENGTH,
    Cost,
    JsonValue,
    Name,
    Text,
    WaitSeconds,
)

MAX_BATCH_ITEMS: Final = 100
"""Most tasks one batch request claims, completes or fails."""

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize_route)])

TaskIdField = Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID_LENGTH)]
LeaseToken = Annotated[str, Field(min_length=1, max_length=MAX_LEASE_TOKEN_LENGTH)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClaimBatchRequest(_Body):
    """Lease up to ``max_tasks`` tasks (never past the agent's free slots), waiting up
    to ``wait_s`` for at least one."""

    agent_id: Name
    max_tasks: Annotated[int, Field(ge=1, le=MAX_BATCH_ITEMS)]
    wait_s: WaitSeconds = 0.0


class CompleteItem(_Body):
    task_id: TaskIdField
    lease_token: LeaseToken
    result: JsonValue
    cost: Cost | None = None


class CompleteBatchRequest(_Body):
    items: Annotated[list[CompleteItem], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


class FailItem(_Body):
    task_id: TaskIdField
    lease_token: LeaseToken
    error: Text
    retryable: bool = True


class FailBatchRequest(_Body):
    items: Annotated[list[FailItem], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


class TaskListOut(BaseModel):
    tasks: list[dict[str, Any]]


class ItemOutcomeOut(BaseModel):
    task_id: str
    status: int
    task: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None


class BatchOutcomeOut(BaseModel):
    results: list[ItemOutcomeOut]


@router.post(
    "/tasks/claim-batch",
    response_model=TaskListOut,
    tags=["tasks"],
    operation_id="claimTasks",
    responses=problem_responses(403, 404, *BODY_PROBLEMS),
)
async def claim_tasks(
    body: ClaimBatchRequest,
    request: Request,
    cp: Coordinator,
    state: State,
    ws: Workspace,
    guard: RouteGuard,
    services: Svc,
    caller: Caller,
) -> Response:
    """Lease up to ``max_tasks`` of the best tasks for the agent in one store operation.

    Each task carries the ``lease_token`` its completion needs. An empty list when none
    came within ``wait_s`` or the server began to shut down. Workspace rules see the
    agent's capabilities as ``agent_capabilities``.
    """
    set_audit_resource(request, f"agent:{body.agent_id}")
    await ensure_acts_as_agent(services, cp, caller, body.agent_id)
    agent = await cp.get_agent(body.agent_id, workspace_id=ws)
    await guard.check(agent_capabilities=agent.capabilities)
    tasks: list[Task]
    if body.wait_s > 0 and not state.shutting_down:
        waiting = cp.claim_tasks(
            body.agent_id, max_tasks=body.max_tasks, wait_s=body.wait_s, workspace_id=ws
        )
        outcome = await long_poll(request, state, waiting)
        tasks = [] if outcome is SHUTDOWN else outcome
    else:
        tasks = await cp.claim_tasks(body.agent_id, max_tasks=body.max_tasks, workspace_id=ws)
    return SafeJSONResponse({"tasks": [task_to_dict(t, include_lease=True) for t in tasks]})


@router.post(
    "/tasks/complete-batch",
    response_model=BatchOutcomeOut,
    tags=["tasks"],
    operation_id="completeTasks",
    responses=problem_responses(*BODY_PROBLEMS),
)
async def complete_tasks(
    body: CompleteBatchRequest, request: Request, cp: Coordinator, ws: Workspace
) -> Response:
    """Record each attempt's result; each item answered in its place (409: lease lost
    or task cancelled, 404: no such task in the workspace)."""
    set_audit_resource(request, f"tasks:{len(body.items)}")
    outcomes = await cp.complete_tasks(
        [(i.task_id, i.result, i.lease_token) for i in body.items],
        costs=[i.cost for i in body.items],
        workspace_id=ws,
    )
    return _results([i.task_id for i in body.items], outcomes)


@router.post(
    "/tasks/fail-batch",
    response_model=BatchOutcomeOut,
    tags=["tasks"],
    operation_id="failTasks",
    responses=problem_responses(*BODY_PROBLEMS),
)
async def fail_tasks(
    body: FailBatchRequest, request: Request, cp: Coordinator, ws: Workspace
) -> Response:
    """Record each attempt's error (retried after a backoff, or failed); each item
    answered in its place as in ``complete-batch``."""
    set_audit_resource(request, f"tasks:{len(body.items)}")
    outcomes = await cp.fail_tasks(
        [(i.task_id, i.error, i.lease_token, i.retryable) for i in body.items], workspace_id=ws
    )
    return _results([i.task_id for i in body.items], outcomes)


def _results(task_ids: list[str], outcomes: list[Task | ControlPlaneError]) -> Response:
    results: list[dict[str, Any]] = []
    for task_id, outcome in zip(task_ids, outcomes, strict=True):
        if isinstance(outcome, ControlPlaneError):
            problem = problem_for_error(outcome)
            results.append(
                {
                    "task_id": task_id,
                    "status": problem.status_code,
                    "problem": json.loads(bytes(problem.body)),
                }
            )
        else:
            results.append({"task_id": task_id, "status": 200, "task": task_to_dict(outcome)})
    return SafeJSONResponse({"results": results})
