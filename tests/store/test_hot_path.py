"""The fast paths: batched reads, claimers that keep listening, results handed over with
the notification. Same guarantees as the plain operations, on every store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aragora.control_plane import (
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    TaskStatus,
    ValidationError,
)
from aragora.control_plane.models import Task

WAIT_S = 10.0


@pytest.fixture
async def other(config: ControlPlaneConfig) -> AsyncIterator[ControlPlaneCoordinator]:
    """A second coordinator on the same store (another process, as far as the first
    one's notifications are concerned)."""
    async with ControlPlaneCoordinator(config, run_reaper=False) as coordinator:
        yield coordinator


async def test_get_tasks_answers_in_order_with_none_for_unknown_and_foreign_ids(
    cp: ControlPlaneCoordinator,
) -> None:
    mine = [await cp.submit_task("t", {"i": i}) for i in range(3)]
    foreign = await cp.submit_task("t", {"i": 9}, workspace_id="other")
    found = await cp.get_tasks([mine[2], "no-such-task", mine[0], foreign, mine[1]])
    assert [t.payload if t else None for t in found] == [{"i": 2}, None, {"i": 0}, None, {"i": 1}]
    assert (await cp.get_tasks([foreign], workspace_id="other"))[0] is not None


async def test_get_tasks_refuses_an_empty_or_oversized_batch(cp: ControlPlaneCoordinator) -> None:
    for ids in ([], ["x"] * 1001):
        with pytest.raises(ValidationError) as raised:
            await cp.get_tasks(ids)
        assert raised.value.field == "task_ids"


async def test_a_claimer_that_came_back_short_still_sees_work_submitted_elsewhere(
    cp: ControlPlaneCoordinator, other: ControlPlaneCoordinator
) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=4)
    async with cp.claimer("a") as claimer:
        assert await claimer.claim(4) == []
        waiting = asyncio.create_task(claimer.claim(4, wait_s=WAIT_S))
        task_id = await other.submit_task("t", {"n": 1})
        tasks = await asyncio.wait_for(waiting, WAIT_S)
    assert [t.id for t in tasks] == [task_id]
    assert tasks[0].status is TaskStatus.RUNNING and tasks[0].lease_token


async def test_a_claimer_with_nothing_new_returns_nothing_without_waiting_past_its_wait(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m")
    async with cp.claimer("a") as claimer:
        assert await claimer.claim(1, wait_s=0) == []
        assert await asyncio.wait_for(claimer.claim(1, wait_s=0.05), WAIT_S) == []


async def test_an_agent_waiting_at_capacity_gets_the_next_task_when_its_slot_frees(
    cp: ControlPlaneCoordinator, other: ControlPlaneCoordinator
) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=1)
    first = await cp.submit_task("t", 1)
    second = await cp.submit_task("t", 2)
    async with cp.claimer("a") as claimer:
        [running] = await claimer.claim(1)
        assert running.id == first and running.lease_token
        waiting = asyncio.create_task(claimer.claim(1, wait_s=WAIT_S))
        await other.complete_task(first, "ok", lease_token=running.lease_token)
        [next_task] = await asyncio.wait_for(waiting, WAIT_S)
    assert next_task.id == second


async def test_claimer_validates_its_arguments(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    async with cp.claimer("a") as claimer:
        with pytest.raises(ValidationError) as raised:
            await claimer.claim(0)
        assert raised.value.field == "max_tasks"
        with pytest.raises(ValidationError) as raised:
            await claimer.claim(1, wait_s=-1)
        assert raised.value.field == "wait_s"


async def test_a_waiter_gets_the_finished_task_as_the_store_recorded_it(
    cp: ControlPlaneCoordinator, other: ControlPlaneCoordinator
) -> None:
    await other.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {"x": 1})
    waiting = asyncio.create_task(cp.wait_for_task(task_id, WAIT_S))
    claimed = await other.claim_task("a")
    assert claimed is not None and claimed.lease_token
    await other.complete_task(task_id, {"y": 2}, lease_token=claimed.lease_token, cost=0.5)
    finished = await asyncio.wait_for(waiting, WAIT_S)
    assert finished == await cp.get_task(task_id)
    assert finished.status is TaskStatus.COMPLETED and finished.result == {"y": 2}


@pytest.mark.parametrize("store_kind", ["redis", "cluster"], indirect=True)
@pytest.mark.parametrize("size", [10, 10_000])
async def test_redis_hands_a_small_finished_task_to_its_waiters(
    cp: ControlPlaneCoordinator, other: ControlPlaneCoordinator, size: int
) -> None:
    await other.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", "p")
    async with cp.store.watch_task("default", task_id) as watch:
        claimed = await other.claim_task("a")
        assert claimed is not None and claimed.lease_token
        await other.complete_task(task_id, "r" * size, lease_token=claimed.lease_token)
        assert await watch.wait(WAIT_S)
        delivered = watch.take_value()
    if size > 4096:  # too big to travel with the notification: the waiter reads it
        assert delivered is None
    else:
        assert isinstance(delivered, Task)
        assert delivered == await cp.get_task(task_id)
