"""Batch operations: each item keeps the atomicity and the rules of the single operation,
with fewer round trips; refused items are answered in their place."""

from __future__ import annotations

import pytest

from aragora.control_plane import (
    ControlPlaneCoordinator,
    LeaseLostError,
    QuotaExceededError,
    TaskPriority,
    TaskSpec,
    TaskStatus,
    ValidationError,
)
from aragora.control_plane.models import WorkspaceLimits


async def test_batch_submit_keeps_order_priorities_and_idempotency(
    cp: ControlPlaneCoordinator,
) -> None:
    first = await cp.submit_task("t", {"i": -1}, idempotency_key="k")
    outcomes = await cp.submit_tasks(
        [
            TaskSpec("t", {"i": 0}, priority=TaskPriority.LOW),
            TaskSpec("t", {"i": 1}, priority="critical"),
            TaskSpec("t", {"i": 2}, idempotency_key="k"),
            TaskSpec("t", {"i": 3}, ["x"]),
        ]
    )
    assert outcomes[2] == first
    ids = [o for o in outcomes if isinstance(o, str)]
    assert len(ids) == 4
    assert (await cp.get_task(ids[3])).required_capabilities == ("x",)
    assert (await cp.store.counts("default")).pending == 4


async def test_batch_submit_validates_every_task_before_writing(
    cp: ControlPlaneCoordinator,
) -> None:
    with pytest.raises(ValidationError) as raised:
        await cp.submit_tasks([TaskSpec("t", {}), TaskSpec("t", {}, priority="urgent")])
    assert raised.value.field == "tasks[1].priority"
    assert (await cp.store.counts("default")).total == 0


async def test_batch_submit_answers_a_refused_task_in_its_place(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.set_workspace_limits("default", WorkspaceLimits(max_pending_tasks=2))
    outcomes = await cp.submit_tasks([TaskSpec("t", {"i": i}) for i in range(3)])
    assert [type(o) for o in outcomes[:2]] == [str, str]
    assert isinstance(outcomes[2], QuotaExceededError)
    assert (await cp.store.counts("default")).pending == 2


async def test_claiming_several_takes_the_best_up_to_free_capacity(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", ["x"], model="m", max_concurrent_tasks=3)
    await cp.submit_tasks(
        [
            TaskSpec("t", {"i": 0}, priority="low"),
            TaskSpec("t", {"i": 1}, ["x"], priority="high"),
            TaskSpec("t", {"i": 2}, ["y"], priority="critical"),
            TaskSpec("t", {"i": 3}, priority="normal"),
            TaskSpec("t", {"i": 4}, priority="high"),
        ]
    )
    first = await cp.claim_tasks("a", max_tasks=2)
    assert [t.payload["i"] for t in first] == [1, 4]
    assert all(t.status is TaskStatus.RUNNING and t.lease_token for t in first)
    second = await cp.claim_tasks("a", max_tasks=10)
    assert [t.payload["i"] for t in second] == [3]  # capacity 3: one slot left
    assert await cp.claim_tasks("a", max_tasks=5) == []


async def test_batch_complete_records_each_result_once(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=4)
    await cp.submit_tasks([TaskSpec("t", {"i": i}) for i in range(3)])
    tasks = await cp.claim_tasks("a", max_tasks=3)
    items = [(t.id, {"r": t.payload["i"]}, t.lease_token or "") for t in tasks]
    items.append((tasks[0].id, {"r": "again"}, tasks[0].lease_token or ""))
    outcomes = await cp.complete_tasks(items)
    done = [o for o in outcomes if not isinstance(o, Exception)]
    assert [o.result for o in done] == [{"r": 0}, {"r": 1}, {"r": 2}]
    assert isinstance(outcomes[3], LeaseLostError)
    assert (await cp.get_task(tasks[0].id)).result == {"r": 0}
    assert (await cp.get_agent("a")).running_task_ids == ()
