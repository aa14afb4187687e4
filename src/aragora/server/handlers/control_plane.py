"""The control plane API (ADR-009): agents, tasks and health under ``/api/control-plane``.

Handlers only translate: HTTP in, one coordinator call, JSON out. Every call acts in
the workspace of the authenticated principal
(:func:`aragora.server.middleware.tenancy.current_workspace`). The router authorizes
each route from :data:`aragora.server.authz.ROUTE_ACCESS`; submit, register and claim
add the request's attributes for workspace rules, agent tokens act only as their own
agents, and submits count against the workspace's per-minute rate limit. Errors become
problem+json through the app's exception handlers (:mod:`aragora.server.problems`).

Submitting always answers 201, also when an ``idempotency_key`` returned the task it
created before (the body then names that task and its current status). A submitted
task carries the request's correlation id as ``metadata["correlation_id"]`` unless the
client set that key itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.health import HealthStatus
from aragora.control_plane.models import AgentStatus, BreakerState, Task, TaskStatus
from aragora.control_plane.serialization import agent_to_dict, task_to_dict
from aragora.server.authz import (
    API_PREFIX,
    RouteGuard,
    authorize_route,
    claim_agent,
    ensure_acts_as_agent,
)
from aragora.server.context import request_context, set_audit_resource
from aragora.server.handlers.responses import (
    BODY_PROBLEMS,
    HealthJSONResponse,
    agent_response,
    problem_responses,
    task_response,
)
from aragora.server.longpoll import SHUTDOWN, long_poll
from aragora.server.middleware.tenancy import current_principal, current_workspace
from aragora.server.observability import ServerObservability
from aragora.server.quotas import check_submit_rate
from aragora.server.rendering import SafeJSONResponse
from aragora.server.schemas import (
    CURSOR_PATTERN,
    MAX_CURSOR_LENGTH,
    MAX_LIST_LIMIT,
    MAX_NAME_LENGTH,
    MAX_TASK_ID_LENGTH,
    NAME_PATTERN,
    AgentHealthOut,
    AgentListOut,
    AgentOut,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HealthOut,
    HeartbeatOut,
    HeartbeatRequest,
    RegisterAgentRequest,
    SubmitTaskOut,
    SubmitTaskRequest,
    TaskListOut,
    TaskOut,
    WaitSeconds,
)
from aragora.server.services import Services, get_observability, get_services
from aragora.server.state import ServerState, get_coordinator, get_server_state
from aragora.store.base import TaskPage
from aragora.tenancy.models import Principal

PREFIX = API_PREFIX
CORRELATION_METADATA_KEY = "correlation_id"
"""The task metadata key that carries the submit request's correlation id."""

router = APIRouter(prefix=PREFIX, dependencies=[Depends(authorize_route)])

Coordinator = Annotated[ControlPlaneCoordinator, Depends(get_coordinator)]
State = Annotated[ServerState, Depends(get_server_state)]
Workspace = Annotated[str, Depends(current_workspace)]
Caller = Annotated[Principal, Depends(current_principal)]
Svc = Annotated[Services, Depends(get_services)]
Observability = Annotated[ServerObservability, Depends(get_observability)]
TaskId = Annotated[str, Path(min_length=1, max_length=MAX_TASK_ID_LENGTH)]
AgentId = Annotated[str, Path(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)]
OptionalName = Annotated[
    str | None, Query(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
]


# -- agents ------------------------------------------------------------------------


@router.post(
    "/agents/register",
    status_code=201,
    response_model=AgentOut,
    tags=["agents"],
    operation_id="registerAgent",
    responses=problem_responses(403, *BODY_PROBLEMS),
)
async def register_agent(
    body: RegisterAgentRequest,
    request: Request,
    cp: Coordinator,
    ws: Workspace,
    guard: RouteGuard,
    services: Svc,
    caller: Caller,
) -> Response:
    """Register an agent, or update one; tasks it still held go back to the queue.

    An agent token becomes the owner of the agent it registers (403 when another token
    owns it); workspace rules see the agent's capabilities as ``agent_capabilities``.
    """
    set_audit_resource(request, f"agent:{body.agent_id}")
    await guard.check(agent_capabilities=body.capabilities)
    await claim_agent(services, caller, body.agent_id)
    agent = await cp.register_agent(
        body.agent_id,
        body.capabilities,
        body.model,
        workspace_id=ws,
        max_concurrent_tasks=body.max_concurrent_tasks,
        metadata=body.metadata,
    )
    return agent_response(agent, status_code=201)


@router.get(
    "/agents",
    response_model=AgentListOut,
    tags=["agents"],
    operation_id="listAgents",
    responses=problem_responses(422),
)
async def list_agents(
    cp: Coordinator,
    ws: Workspace,
    capability: OptionalName = None,
    status: AgentStatus | None = None,
) -> Response:
    """Agents of the workspace, optionally only those with a capability or a status."""
    agents = await cp.list_agents(capability, status, workspace_id=ws)
    return SafeJSONResponse({"agents": [agent_to_dict(a) for a in agents]})


@router.get(
    "/agents/{agent_id}",
    response_model=AgentOut,
    tags=["agents"],
    operation_id="getAgent",
    responses=problem_responses(404, 422),
)
async def get_agent(agent_id: AgentId, cp: Coordinator, ws: Workspace) -> Response:
    """One agent."""
    return agent_response(await cp.get_agent(agent_id, workspace_id=ws))


@router.get(
    "/agents/{agent_id}/health",
    response_model=AgentHealthOut,
    response_class=HealthJSONResponse,
    tags=["agents", "health"],
    operation_id="getAgentHealth",
    responses=problem_responses(404, 422),
)
async def agent_health(agent_id: AgentId, cp: Coordinator, ws: Workspace) -> Response:
    """One agent's health: breaker state, error rate and calls in the breaker's window,
    age of its last heartbeat, and its status (``fail``: offline or breaker open;
    ``warn``: draining, breaker half-open or a heartbeat missed)."""
    agent = await cp.get_agent(agent_id, workspace_id=ws)
    breaker = await cp.get_breaker(agent_id, workspace_id=ws)
    now = await cp.store.now()
    age_s = max(0.0, now - agent.last_heartbeat_at)
    if agent.status is AgentStatus.OFFLINE or breaker.state is BreakerState.OPEN:
        status = HealthStatus.FAIL
    elif (
        agent.status is AgentStatus.DRAINING
        or breaker.state is BreakerState.HALF_OPEN
        or age_s > 2 * cp.config.heartbeat_interval
    ):
        status = HealthStatus.WARN
    else:
        status = HealthStatus.PASS
    return HealthJSONResponse(
        {
            "status": status.value,
            "agent_id": agent.agent_id,
            "agent_status": agent.status.value,
            "breaker_state": breaker.state.value,
            "error_rate": round(breaker.error_rate, 4),
            "calls_in_window": breaker.calls,
            "failures_in_window": breaker.failures,
            "last_heartbeat_at": agent.last_heartbeat_at,
            "last_heartbeat_age_s": round(age_s, 3),
            "running_tasks": len(agent.running_task_ids),
        }
    )


@router.post(
    "/agents/{agent_id}/heartbeat",
    response_model=HeartbeatOut,
    tags=["agents"],
    operation_id="heartbeat",
    responses=problem_responses(403, 404, *BODY_PROBLEMS),
)
async def heartbeat(
    agent_id: AgentId,
    cp: Coordinator,
    ws: Workspace,
    services: Svc,
    caller: Caller,
    body: HeartbeatRequest | None = None,
) -> Response:
    """Keep the agent alive; learn which of its tasks were cancelled while it ran them."""
    await ensure_acts_as_agent(services, cp, caller, agent_id)
    status = None if body is None or body.status is None else AgentStatus(body.status)
    result = await cp.heartbeat(agent_id, status=status, workspace_id=ws)
    return SafeJSONResponse(
        {
            "agent": agent_to_dict(result.agent),
            "cancelled_task_ids": list(result.cancelled_task_ids),
        }
    )


@router.delete(
    "/agents/{agent_id}",
    status_code=204,
    response_class=Response,
    tags=["agents"],
    operation_id="deregisterAgent",
    responses=problem_responses(403, 404, 422),
)
async def deregister_agent(
    agent_id: AgentId, cp: Coordinator, ws: Workspace, services: Svc, caller: Caller
) -> Response:
    """Remove the agent; tasks it held go back to the queue (or fail, retries spent).

    The agent's id is free again afterwards: the next token to register it owns it.
    """
    await ensure_acts_as_agent(services, cp, caller, agent_id)
    await cp.deregister_agent(agent_id, workspace_id=ws)
    await services.tenancy.store.release_agent_owner(ws, agent_id)
    return Response(status_code=204)


# -- tasks -------------------------------------------------------------------------


@router.post(
    "/tasks/submit",
    status_code=201,
    response_model=SubmitTaskOut,
    tags=["tasks"],
    operation_id="submitTask",
    responses=problem_responses(402, 403, 429, *BODY_PROBLEMS),
)
async def submit_task(
    body: SubmitTaskRequest,
    request: Request,
    cp: Coordinator,
    ws: Workspace,
    guard: RouteGuard,
    services: Svc,
    caller: Caller,
) -> Response:
    """Queue a task. 201 also when the idempotency key returned an existing task.

    Workspace rules see ``task_type``, ``priority``, ``payload_bytes`` and
    ``required_capabilities``; an allowed submit then counts against the per-minute
    rate limits (429 with ``Retry-After`` when used up).
    """
    payload_bytes = cp.scheduler.check_size("payload", body.payload)
    await guard.check(
        task_type=body.task_type,
        priority=body.priority,
        payload_bytes=payload_bytes,
        required_capabilities=body.required_capabilities,
    )
    quotas = await services.quotas.get(ws)
    await check_submit_rate(services.rate_limiter, quotas, caller)
    metadata = dict(body.metadata or {})
    correlation = request_context(request.scope).correlation_id
    if correlation:
        # The agent SDK logs every line about the task with it (ctx.correlation_id).
        metadata.setdefault(CORRELATION_METADATA_KEY, correlation)
    # The scheduler (not the facade's submit_task) returns the task, so the status of
    # an existing task comes without a second read.
    task = await cp.scheduler.submit(
        body.task_type,
        body.payload,
        body.required_capabilities,
        body.priority,
        workspace_id=ws,
        idempotency_key=body.idempotency_key,
        timeout_s=body.timeout_s,
        max_retries=body.max_retries,
        metadata=metadata,
        cost_estimate=body.cost_estimate,
    )
    set_audit_resource(request, f"task:{task.id}")
    return SafeJSONResponse(
        {"task_id": task.id, "status": task.status.value},
        status_code=201,
        headers={"Location": f"{PREFIX}/tasks/{task.id}"},
    )


@router.post(
    "/tasks/claim",
    response_model=TaskOut,
    tags=["tasks"],
    operation_id="claimTask",
    responses={
        204: {"description": "No task for this agent (within wait_s)"},
        **problem_responses(403, 404, *BODY_PROBLEMS),
    },
)
async def claim_task(
    body: ClaimRequest,
    request: Request,
    cp: Coordinator,
    state: State,
    ws: Workspace,
    guard: RouteGuard,
    services: Svc,
    caller: Caller,
) -> Response:
    """Lease the best task the agent may run, waiting up to ``wait_s`` for one.

    The answer carries the ``lease_token`` that completing or failing the attempt needs.
    204 when no task came within ``wait_s`` or the server began to shut down. Workspace
    rules see the agent's capabilities as ``agent_capabilities``.
    """
    set_audit_resource(request, f"agent:{body.agent_id}")
    await ensure_acts_as_agent(services, cp, caller, body.agent_id)
    agent = await cp.get_agent(body.agent_id, workspace_id=ws)
    await guard.check(agent_capabilities=agent.capabilities)
    task: Task | None
    if body.wait_s > 0 and not state.shutting_down:
        outcome = await long_poll(
            request, state, cp.claim_task(body.agent_id, wait_s=body.wait_s, workspace_id=ws)
        )
        task = None if outcome is SHUTDOWN else outcome
    else:
        task = await cp.claim_task(body.agent_id, workspace_id=ws)
    if task is None:
        return Response(status_code=204)
    return task_response(task, include_lease=True)


@router.get(
    "/tasks",
    response_model=TaskListOut,
    tags=["tasks"],
    operation_id="listTasks",
    responses=problem_responses(422),
)
async def list_tasks(
    cp: Coordinator,
    ws: Workspace,
    status: TaskStatus | None = None,
    task_type: OptionalName = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=MAX_CURSOR_LENGTH, pattern=CURSOR_PATTERN)
    ] = None,
) -> Response:
    """Tasks of the workspace, newest first, a page at a time."""
    page: TaskPage = await cp.list_tasks(
        status, task_type=task_type, limit=limit, cursor=cursor, workspace_id=ws
    )
    return SafeJSONResponse(
        {"tasks": [task_to_dict(t) for t in page.tasks], "next_cursor": page.next_cursor}
    )


@router.get(
    "/tasks/{task_id}",
    response_model=TaskOut,
    tags=["tasks"],
    operation_id="getTask",
    responses=problem_responses(404, 422),
)
async def get_task(
    task_id: TaskId,
    request: Request,
    cp: Coordinator,
    state: State,
    ws: Workspace,
    wait_s: Annotated[WaitSeconds, Query()] = 0.0,
) -> Response:
    """The task; with ``wait_s``, once it is finished or when ``wait_s`` has passed.

    A shutting-down server answers a waiting request at once with the current state.
    """
    if wait_s > 0 and not state.shutting_down:
        outcome = await long_poll(request, state, _wait_until_finished(cp, task_id, wait_s, ws))
        if isinstance(outcome, Task):
            return task_response(outcome)
    return task_response(await cp.get_task(task_id, workspace_id=ws))


async def _wait_until_finished(
    cp: ControlPlaneCoordinator, task_id: str, wait_s: float, workspace_id: str
) -> Task | None:
    try:
        return await cp.wait_for_task(task_id, wait_s, workspace_id=workspace_id)
    except TimeoutError:
        return None


@router.post(
    "/tasks/{task_id}/complete",
    response_model=TaskOut,
    tags=["tasks"],
    operation_id="completeTask",
    responses=problem_responses(404, 409, *BODY_PROBLEMS),
)
async def complete_task(
    task_id: TaskId, body: CompleteRequest, cp: Coordinator, ws: Workspace
) -> Response:
    """Record the attempt's result. 409 when the lease is lost or the task was cancelled."""
    task = await cp.complete_task(
        task_id, body.result, lease_token=body.lease_token, cost=body.cost, workspace_id=ws
    )
    return task_response(task)


@router.post(
    "/tasks/{task_id}/fail",
    response_model=TaskOut,
    tags=["tasks"],
    operation_id="failTask",
    responses=problem_responses(404, 409, *BODY_PROBLEMS),
)
async def fail_task(task_id: TaskId, body: FailRequest, cp: Coordinator, ws: Workspace) -> Response:
    """Record the attempt's error: the task is retried after a backoff, or fails."""
    task = await cp.fail_task(
        task_id, body.error, lease_token=body.lease_token, retryable=body.retryable, workspace_id=ws
    )
    return task_response(task)


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=TaskOut,
    tags=["tasks"],
    operation_id="cancelTask",
    responses=problem_responses(404, 409, 422),
)
async def cancel_task(task_id: TaskId, cp: Coordinator, ws: Workspace) -> Response:
    """Cancel a pending or running task (a running agent learns it from its heartbeat)."""
    return task_response(await cp.cancel_task(task_id, workspace_id=ws))


@router.post(
    "/tasks/{task_id}/retry",
    response_model=TaskOut,
    tags=["tasks"],
    operation_id="retryTask",
    responses=problem_responses(404, 409, 422),
)
async def retry_task(task_id: TaskId, cp: Coordinator, ws: Workspace) -> Response:
    """Send a failed task back to the queue with a fresh allowance of retries."""
    return task_response(await cp.retry_task(task_id, workspace_id=ws))


# -- health ------------------------------------------------------------------------


@router.get(
    "/health",
    response_model=HealthOut,
    response_class=HealthJSONResponse,
    tags=["health"],
    operation_id="health",
    responses={
        **problem_responses(),
        503: {"model": HealthOut, "description": "The control plane is failing"},
    },
)
async def health(observability: Observability, ws: Workspace) -> Response:
    """Health of the deployment as this instance sees it: the store, every live server
    instance (``instance:heartbeat``), the workspace's agents and queues. 200 for pass
    or warn, 503 for fail; a component degrades the overall status only after two
    consecutive bad evaluations (see :mod:`aragora.server.health`)."""
    answer = await observability.health.evaluate(ws)
    return HealthJSONResponse(answer.body(), status_code=answer.http_status)
