"""Workspace limits and budgets, enforced by the store inside the transitions they guard."""

from __future__ import annotations

import asyncio

import pytest

from aragora.control_plane import ControlPlaneCoordinator, TaskStatus, ValidationError
from aragora.control_plane.errors import BudgetExceededError, QuotaExceededError
from aragora.control_plane.models import Alert, BudgetPeriod, WorkspaceLimits
from tests.conftest import Clock, CoordinatorFactory


async def test_limits_round_trip(cp: ControlPlaneCoordinator) -> None:
    assert await cp.get_workspace_limits("default") == WorkspaceLimits()
    limits = WorkspaceLimits(
        max_agents=3,
        max_pending_tasks=10,
        max_running_tasks=2,
        max_payload_bytes=100,
        budget=12.5,
        budget_period=BudgetPeriod.DAILY,
        budget_soft_ratio=0.5,
    )
    await cp.set_workspace_limits("default", limits)
    assert await cp.get_workspace_limits("default") == limits
    assert await cp.get_workspace_limits("other") == WorkspaceLimits()


async def test_pending_quota_refuses_the_task_past_the_limit(cp: ControlPlaneCoordinator) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_pending_tasks=2))
    await cp.submit_task("t", {})
    await cp.submit_task("t", {})
    with pytest.raises(QuotaExceededError) as raised:
        await cp.submit_task("t", {})
    assert (raised.value.quota, raised.value.limit, raised.value.current) == (
        "max_pending_tasks",
        2,
        2,
    )
    assert (await cp.store.counts("default")).pending == 2
    await cp.submit_task("t", {}, workspace_id="other")


async def test_pending_quota_holds_under_concurrent_submits_from_many_coordinators(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_pending_tasks=7))
    others = [await cp_factory() for _ in range(3)]

    async def submit(coordinator: ControlPlaneCoordinator) -> bool:
        try:
            await coordinator.submit_task("t", {})
        except QuotaExceededError:
            return False
        return True

    outcomes = await asyncio.gather(*(submit(others[i % 3]) for i in range(30)))
    assert sum(outcomes) == 7
    assert (await cp.store.counts("default")).pending == 7


async def test_payload_quota_of_the_workspace(cp: ControlPlaneCoordinator) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_payload_bytes=20))
    await cp.submit_task("t", {"a": "x"})
    with pytest.raises(QuotaExceededError) as raised:
        await cp.submit_task("t", {"a": "x" * 30})
    assert raised.value.quota == "max_payload_bytes" and raised.value.limit == 20


async def test_agent_quota_counts_new_agents_only(cp: ControlPlaneCoordinator) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_agents=1))
    await cp.register_agent("a", [], model="m")
    await cp.register_agent("a", ["x"], model="m2")
    with pytest.raises(QuotaExceededError) as raised:
        await cp.register_agent("b", [], model="m")
    assert raised.value.quota == "max_agents"
    assert [a.agent_id for a in await cp.list_agents()] == ["a"]


async def test_running_quota_holds_back_claims(cp: ControlPlaneCoordinator) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_running_tasks=1))
    await cp.register_agent("a", [], model="m")
    await cp.register_agent("b", [], model="m")
    await cp.submit_task("t", {})
    await cp.submit_task("t", {})
    first = await cp.claim_task("a")
    assert first is not None and first.lease_token
    assert await cp.claim_task("b") is None
    await cp.complete_task(first.id, 1, lease_token=first.lease_token)
    assert await cp.claim_task("b") is not None


async def _finish(
    cp: ControlPlaneCoordinator, agent: str, *, cost: float | None = None, fail: bool = False
) -> None:
    task = await cp.claim_task(agent)
    assert task is not None and task.lease_token
    if fail:
        await cp.fail_task(task.id, "x", lease_token=task.lease_token, retryable=False)
    else:
        await cp.complete_task(task.id, 1, lease_token=task.lease_token, cost=cost)


async def test_budget_reserves_settles_and_releases(cp: ControlPlaneCoordinator) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(budget=10.0))
    await cp.register_agent("a", ["x"], model="model-a", max_concurrent_tasks=10)
    await cp.submit_task("summarise", {}, ["x"], cost_estimate=4.0)
    await cp.submit_task("translate", {}, ["x"], cost_estimate=4.0)
    spend = await cp.get_spend()
    assert (spend.reserved, spend.spent, spend.budget) == (8.0, 0.0, 10.0)
    with pytest.raises(BudgetExceededError) as raised:
        await cp.submit_task("t", {}, ["x"], cost_estimate=3.0)
    assert (raised.value.limit, raised.value.used, raised.value.estimate) == (10.0, 8.0, 3.0)

    await _finish(cp, "a", cost=1.5)  # settles the first: 4 reserved back, 1.5 spent
    spend = await cp.get_spend()
    assert (spend.reserved, spend.spent) == (4.0, 1.5)
    assert spend.by_task_type == {"summarise": 1.5}
    assert spend.by_model == {"model-a": 1.5}
    await _finish(cp, "a", fail=True)  # releases the second
    spend = await cp.get_spend()
    assert (spend.reserved, spend.spent) == (0.0, 1.5)
    await cp.submit_task("t", {}, ["x"], cost_estimate=8.5)
    with pytest.raises(BudgetExceededError):
        await cp.submit_task("t", {}, ["x"])


async def test_cancel_releases_and_a_missing_cost_settles_the_estimate(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(budget=100.0))
    await cp.register_agent("a", [], model="m")
    cancelled = await cp.submit_task("t", {}, cost_estimate=30.0)
    await cp.cancel_task(cancelled)
    assert (await cp.get_spend()).reserved == 0.0
    await cp.submit_task("t", {}, cost_estimate=2.0)
    await _finish(cp, "a")
    spend = await cp.get_spend()
    assert (spend.reserved, spend.spent) == (0.0, 2.0)


async def test_reservation_survives_an_agent_crash_and_settles_once(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(budget=10.0))
    await cp.register_agent("dead", [], model="m")
    await cp.register_agent("alive", [], model="m")
    task_id = await cp.submit_task("t", {}, cost_estimate=5.0)
    assert await cp.claim_task("dead") is not None
    clock.advance(cp.config.heartbeat_timeout + 1)
    await cp.heartbeat("alive")
    await cp.reap()
    assert (await cp.get_spend()).reserved == 5.0
    clock.advance(cp.config.retry_backoff_max_s + 1)
    await cp.heartbeat("alive")
    await _finish(cp, "alive", cost=3.0)
    assert (await cp.get_task(task_id)).status is TaskStatus.COMPLETED
    spend = await cp.get_spend()
    assert (spend.reserved, spend.spent) == (0.0, 3.0)


async def test_spend_is_kept_per_period(cp: ControlPlaneCoordinator, clock: Clock) -> None:
    await cp.set_workspace_limits(
        "default", WorkspaceLimits(budget=5.0, budget_period=BudgetPeriod.DAILY)
    )
    await cp.register_agent("a", [], model="m")
    await cp.submit_task("t", {}, cost_estimate=5.0)
    await _finish(cp, "a")
    with pytest.raises(BudgetExceededError):
        await cp.submit_task("t", {})
    clock.advance(86_400)
    await cp.heartbeat("a")
    assert (await cp.get_spend()).spent == 0.0
    await cp.submit_task("t", {}, cost_estimate=5.0)


async def test_soft_limit_alerts_once_per_period(cp: ControlPlaneCoordinator) -> None:
    alerts: list[Alert] = []
    raised = asyncio.Event()

    def hook(alert: Alert) -> None:
        alerts.append(alert)
        raised.set()

    cp.add_alert_hook(hook)
    await cp.set_workspace_limits("default", WorkspaceLimits(budget=10.0, budget_soft_ratio=0.8))
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=5)
    await cp.submit_task("t", {}, cost_estimate=5.0)
    await cp.submit_task("t", {}, cost_estimate=1.0)

    assert alerts == []
    await cp.submit_task("t", {}, cost_estimate=2.5)
    await asyncio.wait_for(raised.wait(), 5)  # SQLite announces after commit, on the loop
    await cp.submit_task("t", {}, cost_estimate=1.0)
    await _finish(cp, "a", cost=0.5)
    await asyncio.sleep(0)
    assert [a.kind for a in alerts] == ["budget.soft_limit"]
    assert alerts[0].workspace_id == "default" and alerts[0].details["budget"] == 10.0


async def test_bad_cost_estimate_is_refused(cp: ControlPlaneCoordinator) -> None:
    with pytest.raises(ValidationError) as raised:
        await cp.submit_task("t", {}, cost_estimate=-1.0)
    assert raised.value.field == "cost_estimate"
