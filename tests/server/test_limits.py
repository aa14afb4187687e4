"""Workspace quotas and budgets, set through the library, answered over HTTP."""

from __future__ import annotations

import httpx

from aragora.control_plane import ControlPlaneCoordinator
from aragora.control_plane.models import WorkspaceLimits
from tests.server.conftest import API, assert_problem, register, submit


async def test_pending_task_quota_is_403_and_writes_nothing(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_pending_tasks=1))
    await submit(client)
    response = await client.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    problem = assert_problem(response, 403, "quota-exceeded")
    assert (problem["quota"], problem["limit"], problem["current"]) == ("max_pending_tasks", 1, 1)
    assert len((await client.get(f"{API}/tasks")).json()["tasks"]) == 1


async def test_agent_quota_is_403(client: httpx.AsyncClient, cp: ControlPlaneCoordinator) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_agents=1))
    await register(client, "agent-1")
    response = await client.post(
        f"{API}/agents/register", json={"agent_id": "agent-2", "capabilities": [], "model": "m"}
    )
    assert assert_problem(response, 403, "quota-exceeded")["quota"] == "max_agents"


async def test_workspace_payload_quota_is_413_naming_payload(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_payload_bytes=10))
    response = await client.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": "x" * 20}
    )
    problem = assert_problem(response, 413, "payload-too-large", "payload")
    assert (problem["size_bytes"], problem["limit_bytes"]) == (22, 10)


async def test_budget_reserves_estimates_and_refuses_with_402(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(budget=1.0))
    await submit(client, cost_estimate=0.75)
    response = await client.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": 1, "cost_estimate": 0.5}
    )
    problem = assert_problem(response, 402, "budget-exceeded")
    assert (problem["limit"], problem["used"], problem["estimate"]) == (1.0, 0.75, 0.5)
    assert (await cp.get_spend()).reserved == 0.75


async def test_negative_cost_estimate_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": 1, "cost_estimate": -1}
    )
    assert_problem(response, 422, "validation-error", "cost_estimate")
