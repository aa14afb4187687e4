"""The async client against the real app in-process: every route, and its errors mapped
onto the library's exception tree."""

from __future__ import annotations

import asyncio

import pytest

from aragora.client import AsyncControlPlaneClient, AuthenticationError
from aragora.control_plane import (
    AgentNotFoundError,
    AgentStatus,
    BudgetExceededError,
    InvalidStateError,
    LeaseLostError,
    QuotaExceededError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    ValidationError,
)
from aragora.control_plane.models import WorkspaceLimits
from tests.client.inprocess import InProcess


async def test_agent_routes_round_trip(client: AsyncControlPlaneClient) -> None:
    info = await client.register_agent(
        "a-1", ["debate", "code"], "m", max_concurrent_tasks=2, metadata={"zone": "eu"}
    )
    assert info.capabilities == ("code", "debate")
    assert info.max_concurrent_tasks == 2
    assert info.metadata == {"zone": "eu"}
    assert (await client.get_agent("a-1")).model == "m"
    assert [a.agent_id for a in await client.list_agents(capability="code")] == ["a-1"]
    assert await client.list_agents(capability="search") == []

    beat = await client.heartbeat("a-1", AgentStatus.DRAINING)
    assert beat.agent.status is AgentStatus.DRAINING
    assert beat.cancelled_task_ids == ()
    assert [a.agent_id for a in await client.list_agents(status="draining")] == ["a-1"]

    await client.deregister_agent("a-1")
    with pytest.raises(AgentNotFoundError) as missing:
        await client.get_agent("a-1")
    assert missing.value.agent_id == "a-1"


async def test_task_lifecycle_and_lease_fencing(client: AsyncControlPlaneClient) -> None:
    await client.register_agent("a-1", ["debate"], "m")
    task_id = await client.submit_task(
        "debate", {"topic": "x"}, ["debate"], TaskPriority.HIGH, metadata={"correlation_id": "c"}
    )
    claimed = await client.claim_task("a-1")
    assert claimed is not None and claimed.id == task_id
    assert claimed.lease_token and claimed.status is TaskStatus.RUNNING
    assert claimed.metadata == {"correlation_id": "c"}

    done = await client.complete_task(
        task_id, {"answer": 42}, lease_token=claimed.lease_token, cost=1.5
    )
    assert done.status is TaskStatus.COMPLETED and done.cost == 1.5
    assert await client.wait_for_result(task_id, 1) == {"answer": 42}

    with pytest.raises(LeaseLostError) as lost:
        await client.complete_task(task_id, "again", lease_token=claimed.lease_token)
    assert lost.value.task_id == task_id
    assert await client.claim_task("a-1") is None


async def test_complete_after_cancel_is_task_cancelled(client: AsyncControlPlaneClient) -> None:
    await client.register_agent("a-1", ["debate"], "m")
    task_id = await client.submit_task("debate", {}, ["debate"])
    claimed = await client.claim_task("a-1")
    assert claimed is not None and claimed.lease_token
    assert (await client.cancel_task(task_id)).status is TaskStatus.CANCELLED

    with pytest.raises(TaskCancelledError):
        await client.fail_task(task_id, "x", lease_token=claimed.lease_token)
    with pytest.raises(TaskCancelledError):
        await client.wait_for_result(task_id, 1)
    beat = await client.heartbeat("a-1")
    assert beat.cancelled_task_ids == (task_id,)


async def test_failed_task_raises_with_every_error_and_can_be_retried(
    client: AsyncControlPlaneClient,
) -> None:
    await client.register_agent("a-1", ["debate"], "m")
    task_id = await client.submit_task("debate", {}, ["debate"], max_retries=0)
    claimed = await client.claim_task("a-1")
    assert claimed is not None and claimed.lease_token
    failed = await client.fail_task(task_id, "broken", lease_token=claimed.lease_token)
    assert failed.status is TaskStatus.FAILED

    with pytest.raises(TaskFailedError) as raised:
        await client.wait_for_result(task_id, 1)
    assert [e.error for e in raised.value.errors] == ["broken"]

    assert (await client.retry_task(task_id)).status is TaskStatus.PENDING
    with pytest.raises(InvalidStateError):
        await client.retry_task(task_id)


async def test_wait_wakes_on_completion_and_times_out(client: AsyncControlPlaneClient) -> None:
    await client.register_agent("a-1", ["debate"], "m")
    task_id = await client.submit_task("debate", {}, ["debate"])
    with pytest.raises(TimeoutError):
        await client.wait_for_result(task_id, 0.05)

    waiter = asyncio.create_task(client.wait_for_result(task_id, 30))
    claimed = await client.claim_task("a-1", wait_s=5)
    assert claimed is not None and claimed.lease_token
    await client.complete_task(task_id, "ok", lease_token=claimed.lease_token)
    assert await waiter == "ok"


async def test_unknown_objects_are_not_found(client: AsyncControlPlaneClient) -> None:
    with pytest.raises(TaskNotFoundError) as task:
        await client.get_task("nope")
    assert task.value.task_id == "nope"
    with pytest.raises(AgentNotFoundError):
        await client.claim_task("ghost")
    with pytest.raises(AgentNotFoundError):
        await client.heartbeat("ghost")
    with pytest.raises(TaskNotFoundError):
        await client.cancel_task("nope")


async def test_rejected_fields_are_named(client: AsyncControlPlaneClient) -> None:
    with pytest.raises(ValidationError) as prio:
        await client.submit_task("debate", {}, priority="urgent")
    assert prio.value.field == "priority"
    with pytest.raises(ValidationError) as caps:
        await client.submit_task("debate", {}, ["has space"])
    assert caps.value.field.startswith("required_capabilities")
    with pytest.raises(ValidationError) as limit:
        await client.list_tasks(limit=0)
    assert limit.value.field == "limit"


async def test_idempotency_key_and_paging(client: AsyncControlPlaneClient) -> None:
    first = await client.submit_task("debate", {"n": 0}, idempotency_key="k")
    assert await client.submit_task("debate", {"n": 1}, idempotency_key="k") == first
    for n in range(3):
        await client.submit_task("debate", {"n": n + 1})

    page = await client.list_tasks(TaskStatus.PENDING, task_type="debate", limit=3)
    assert len(page.tasks) == 3 and page.next_cursor
    rest = await client.list_tasks(TaskStatus.PENDING, limit=3, cursor=page.next_cursor)
    assert len(rest.tasks) == 1 and rest.next_cursor is None
    assert rest.tasks[0].id == first


async def test_wrong_or_missing_token_is_an_authentication_error(server: InProcess) -> None:
    for token in ("wrong", None):
        async with server.client(token=token) as c:
            with pytest.raises(AuthenticationError) as denied:
                await c.list_agents()
            assert denied.value.status == 401
            assert await c.is_live()


async def test_health(client: AsyncControlPlaneClient) -> None:
    report = await client.health()
    assert report.ok and report.status == "pass"
    assert "store" in report.checks
    assert await client.is_ready()


async def test_limits_and_budget_answers_become_library_errors(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    await server.coordinator.set_workspace_limits(
        "default", WorkspaceLimits(max_pending_tasks=1, budget=5.0)
    )
    await client.submit_task("t", {}, cost_estimate=2.0)
    with pytest.raises(QuotaExceededError) as quota:
        await client.submit_task("t", {})
    assert (quota.value.quota, quota.value.limit, quota.value.current) == (
        "max_pending_tasks",
        1,
        1,
    )
    await server.coordinator.set_workspace_limits("default", WorkspaceLimits(budget=5.0))
    with pytest.raises(BudgetExceededError) as budget:
        await client.submit_task("t", {}, cost_estimate=4.0)
    assert (budget.value.limit, budget.value.used, budget.value.estimate) == (5.0, 2.0, 4.0)
