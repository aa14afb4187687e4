"""The invariants hold when many agents, coordinators and reapers act at the same time.

Every coordinator here has its own connection to the one store (its own Redis
connections, or its own SQLite connection and thread on the same file), so operations
really do overlap inside the store, not only inside this event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import pytest

from aragora.control_plane import (
    ControlPlaneCoordinator,
    InvalidStateError,
    LeaseLostError,
    Task,
    TaskCancelledError,
    TaskPriority,
    TaskStatus,
)
from tests.conftest import Clock, CoordinatorFactory

N_TASKS = 200
N_COORDINATORS = 5
AGENTS_PER_COORDINATOR = 4


async def _coordinators(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, n: int
) -> list[ControlPlaneCoordinator]:
    return [cp, *[await cp_factory() for _ in range(n - 1)]]


def _lease(task: Task | None) -> tuple[str, str]:
    assert task is not None and task.lease_token is not None
    return task.id, task.lease_token


async def _assert_all_completed_by_their_claimer(
    cp: ControlPlaneCoordinator, claims: list[tuple[str, str]], ids: set[str]
) -> None:
    claimed = [task_id for task_id, _ in claims]
    duplicates = [task_id for task_id, n in Counter(claimed).items() if n > 1]
    assert not duplicates, f"claimed more than once: {duplicates}"
    assert set(claimed) == ids, "some tasks were never claimed"
    page = await cp.list_tasks(limit=1000)
    assert {t.id for t in page.tasks} == ids
    claimer = dict(claims)
    for task in page.tasks:
        assert task.status is TaskStatus.COMPLETED
        assert task.attempt == 1 and task.errors == ()
        assert task.result == {"agent": claimer[task.id]}
    counts = await cp.store.counts("default")
    assert (counts.completed, counts.pending, counts.running, counts.total) == (
        len(ids),
        0,
        0,
        len(ids),
    )
    assert all(a.running_task_ids == () for a in await cp.list_agents())


async def test_many_agents_claiming_at_once_get_every_task_exactly_once(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    coordinators = await _coordinators(cp, cp_factory, N_COORDINATORS)
    priorities = itertools.cycle(TaskPriority)
    ids = {
        await cp.submit_task("work", {"n": n}, priority=next(priorities)) for n in range(N_TASKS)
    }
    claims: list[tuple[str, str]] = []

    async def agent(coordinator: ControlPlaneCoordinator, name: str) -> None:
        await coordinator.register_agent(name, [], model="m", max_concurrent_tasks=2)
        # Nothing is submitted meanwhile and nothing fails, so the first empty claim
        # means the queue is drained for good.
        while (task := await coordinator.claim_task(name)) is not None:
            claims.append((task.id, name))
            assert task.lease_token is not None
            await coordinator.complete_task(task.id, {"agent": name}, lease_token=task.lease_token)

    await asyncio.gather(
        *(
            agent(c, f"agent-{i}-{j}")
            for i, c in enumerate(coordinators)
            for j in range(AGENTS_PER_COORDINATOR)
        )
    )
    await _assert_all_completed_by_their_claimer(cp, claims, ids)


async def test_agents_waiting_for_work_share_tasks_submitted_meanwhile_without_duplicates(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    coordinators = await _coordinators(cp, cp_factory, N_COORDINATORS)
    producer = await cp_factory()
    n_tasks = 120
    claims: list[tuple[str, str]] = []
    all_done = asyncio.Event()

    async def agent(coordinator: ControlPlaneCoordinator, name: str) -> None:
        await coordinator.register_agent(name, [], model="m")
        while not all_done.is_set():
            task = await coordinator.claim_task(name, wait_s=0.3)
            if task is None:
                continue
            claims.append((task.id, name))
            assert task.lease_token is not None
            await coordinator.complete_task(task.id, {"agent": name}, lease_token=task.lease_token)
            if len(claims) == n_tasks:
                all_done.set()

    async def produce() -> set[str]:
        ids: set[str] = set()
        for burst in range(n_tasks // 10):
            batch = [producer.submit_task("work", {"n": burst * 10 + k}) for k in range(10)]
            ids.update(await asyncio.gather(*batch))
        return ids

    agents = [agent(c, f"agent-{i}-{j}") for i, c in enumerate(coordinators) for j in range(2)]
    # Bounded: a task that no waiting claim ever receives would otherwise hang the agents.
    ids, _ = await asyncio.wait_for(asyncio.gather(produce(), asyncio.gather(*agents)), 30)
    await _assert_all_completed_by_their_claimer(cp, claims, ids)


def _pairs(items: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(items[0::2], items[1::2], strict=True))


async def _race(*calls: Any) -> list[Any]:
    results: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
    return results


async def _leased_tasks(cp: ControlPlaneCoordinator, n: int) -> list[tuple[str, str]]:
    await cp.register_agent("holder", [], model="m", max_concurrent_tasks=n)
    for k in range(n):
        await cp.submit_task("work", {"n": k}, max_retries=0)
    return [_lease(await cp.claim_task("holder")) for _ in range(n)]


async def test_same_lease_completed_from_two_coordinators_at_once_records_one_result(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    other = await cp_factory()
    leases = await _leased_tasks(cp, 20)
    outcomes = await _race(
        *(
            c.complete_task(task_id, {"by": name}, lease_token=token)
            for task_id, token in leases
            for c, name in ((cp, "first"), (other, "second"))
        )
    )
    for (task_id, _), pair in zip(leases, _pairs(outcomes), strict=True):
        winners = [o for o in pair if isinstance(o, Task)]
        losers = [o for o in pair if isinstance(o, LeaseLostError)]
        assert (len(winners), len(losers)) == (1, 1), pair
        stored = await cp.get_task(task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert stored.result == winners[0].result
    assert (await cp.store.counts("default")).completed == 20


async def test_complete_racing_fail_on_the_same_lease_lets_exactly_one_through(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    other = await cp_factory()
    leases = await _leased_tasks(cp, 20)
    outcomes = await _race(
        *(
            call
            for task_id, token in leases
            for call in (
                cp.complete_task(task_id, "done", lease_token=token),
                other.fail_task(task_id, "broken", lease_token=token, retryable=False),
            )
        )
    )
    for (task_id, _), (completed, failed) in zip(leases, _pairs(outcomes), strict=True):
        stored = await cp.get_task(task_id)
        if isinstance(completed, Task):
            assert isinstance(failed, LeaseLostError)
            assert stored.status is TaskStatus.COMPLETED and stored.result == "done"
            assert stored.errors == ()
        else:
            assert isinstance(completed, LeaseLostError) and isinstance(failed, Task)
            assert stored.status is TaskStatus.FAILED and stored.result is None
            assert [e.error for e in stored.errors] == ["broken"]
    counts = await cp.store.counts("default")
    assert counts.completed + counts.failed == 20 == counts.total


async def test_complete_racing_cancel_either_records_the_result_or_cancels_never_both(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    other = await cp_factory()
    leases = await _leased_tasks(cp, 20)
    outcomes = await _race(
        *(
            call
            for task_id, token in leases
            for call in (
                cp.complete_task(task_id, "done", lease_token=token),
                other.cancel_task(task_id),
            )
        )
    )
    for (task_id, _), (completed, cancelled) in zip(leases, _pairs(outcomes), strict=True):
        stored = await cp.get_task(task_id)
        if isinstance(completed, Task):
            assert isinstance(cancelled, InvalidStateError)
            assert stored.status is TaskStatus.COMPLETED and stored.result == "done"
        else:
            assert isinstance(completed, TaskCancelledError), completed
            assert isinstance(cancelled, Task)
            assert stored.status is TaskStatus.CANCELLED and stored.result is None
    assert (await cp.get_agent("holder")).running_task_ids == ()


async def test_completions_racing_the_reaper_each_end_the_attempt_once(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    reaper = await cp_factory()
    clock.attach(reaper)
    leases = await _leased_tasks(cp, 20)
    clock.advance(cp.config.heartbeat_timeout + 1)  # the agent looks dead from here on
    outcomes = await _race(
        *(cp.complete_task(task_id, "done", lease_token=token) for task_id, token in leases),
        reaper.reap(),
        reaper.reap(),
    )
    completions, reports = outcomes[:-2], outcomes[-2:]
    assert all(isinstance(o, Task | LeaseLostError) for o in completions), completions
    lost = sum(isinstance(o, LeaseLostError) for o in completions)
    # max_retries=0: a reaped attempt ends the task FAILED.
    assert sum(r.tasks_failed for r in reports) == lost
    for (task_id, _), outcome in zip(leases, completions, strict=True):
        stored = await cp.get_task(task_id)
        if isinstance(outcome, Task):
            assert stored.status is TaskStatus.COMPLETED and stored.errors == ()
        else:
            assert stored.status is TaskStatus.FAILED and stored.result is None
            assert [e.error for e in stored.errors] == ["agent offline"]
    counts = await cp.store.counts("default")
    assert (counts.completed, counts.failed) == (20 - lost, lost)


async def test_cancels_racing_the_reaper_cancel_every_task_and_requeue_none_twice(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    reaper = await cp_factory()
    clock.attach(reaper)
    await cp.register_agent("holder", [], model="m", max_concurrent_tasks=20)
    for k in range(20):
        await cp.submit_task("work", {"n": k})
    leases = [_lease(await cp.claim_task("holder")) for _ in range(20)]
    clock.advance(cp.config.heartbeat_timeout + 1)
    outcomes = await _race(
        *(cp.cancel_task(task_id) for task_id, _ in leases), reaper.reap(), reaper.reap()
    )
    cancels, reports = outcomes[:-2], outcomes[-2:]
    assert all(isinstance(o, Task) and o.status is TaskStatus.CANCELLED for o in cancels)
    requeued_first = 0
    for task_id, _ in leases:
        stored = await cp.get_task(task_id)
        assert stored.status is TaskStatus.CANCELLED
        assert len(stored.errors) <= 1  # "agent offline" if the reaper got there first
        requeued_first += len(stored.errors)
    assert sum(r.tasks_requeued for r in reports) == requeued_first
    counts = await cp.store.counts("default")
    assert (counts.cancelled, counts.total) == (20, 20)


async def test_counts_add_up_at_every_moment_while_agents_work(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    coordinators = await _coordinators(cp, cp_factory, N_COORDINATORS)
    observer = await cp_factory()
    for k in range(N_TASKS):
        await cp.submit_task("work", {"n": k}, max_retries=0)
    working = True
    observations = 0

    async def agent(coordinator: ControlPlaneCoordinator, name: str) -> None:
        await coordinator.register_agent(name, [], model="m", max_concurrent_tasks=2)
        n = 0
        while (task := await coordinator.claim_task(name)) is not None:
            assert task.lease_token is not None
            n += 1
            if n % 3:
                await coordinator.complete_task(task.id, n, lease_token=task.lease_token)
            else:
                await coordinator.fail_task(task.id, "no", lease_token=task.lease_token)

    async def observe() -> None:
        nonlocal observations
        while working:
            counts = await observer.store.counts("default")
            assert counts.total == N_TASKS, counts
            assert min(counts.pending, counts.running, counts.completed, counts.failed) >= 0
            observations += 1

    watching = asyncio.create_task(observe())
    await asyncio.gather(
        *(agent(c, f"agent-{i}-{j}") for i, c in enumerate(coordinators) for j in range(2))
    )
    working = False
    await watching
    assert observations > 0
    counts = await cp.store.counts("default")
    assert counts.completed + counts.failed == N_TASKS


async def test_reapers_on_many_instances_requeue_each_task_of_a_silent_agent_once(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    reapers = await _coordinators(cp, cp_factory, N_COORDINATORS)
    for reaper in reapers[1:]:
        clock.attach(reaper)
    await cp.register_agent("silent", [], model="m", max_concurrent_tasks=10)
    ids = {await cp.submit_task("work", {"n": k}) for k in range(10)}
    for _ in ids:
        _lease(await cp.claim_task("silent"))

    clock.advance(cp.config.heartbeat_timeout + 1)
    reports = await asyncio.gather(*(r.reap() for r in reapers for _ in range(2)))
    assert sum(r.agents_offline for r in reports) == 1
    assert sum(r.tasks_requeued for r in reports) == 10
    assert sum(r.tasks_failed for r in reports) == 0
    for task_id in ids:
        task = await cp.get_task(task_id)
        assert task.status is TaskStatus.PENDING and task.attempt == 1
        assert [e.error for e in task.errors] == ["agent offline"]

    again = await asyncio.gather(*(r.reap() for r in reapers))
    assert sum(r.agents_offline + r.tasks_requeued + r.tasks_failed for r in again) == 0
    for task_id in ids:
        assert len((await cp.get_task(task_id)).errors) == 1
    counts = await cp.store.counts("default")
    assert (counts.pending, counts.running, counts.total) == (10, 0, 10)


async def test_reapers_on_many_instances_end_each_overdue_attempt_once(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    reapers = await _coordinators(cp, cp_factory, N_COORDINATORS)
    for reaper in reapers[1:]:
        clock.attach(reaper)
    await cp.register_agent("slow", [], model="m", max_concurrent_tasks=10)
    retried = {await cp.submit_task("work", {"n": k}, timeout_s=5) for k in range(5)}
    final = {await cp.submit_task("work", {"n": k}, timeout_s=5, max_retries=0) for k in range(5)}
    for _ in range(10):
        _lease(await cp.claim_task("slow"))

    clock.advance(6)
    await cp.heartbeat("slow")  # the agent is alive; only its attempts ran too long
    reports = await asyncio.gather(*(r.reap() for r in reapers for _ in range(2)))
    assert sum(r.agents_offline for r in reports) == 0
    assert sum(r.tasks_requeued for r in reports) == 5
    assert sum(r.tasks_failed for r in reports) == 5
    for task_id in retried | final:
        task = await cp.get_task(task_id)
        expected = TaskStatus.PENDING if task_id in retried else TaskStatus.FAILED
        assert task.status is expected
        assert [e.error for e in task.errors] == ["timed out after 5s"]
    counts = await cp.store.counts("default")
    assert (counts.pending, counts.failed, counts.running) == (5, 5, 0)
    assert (await cp.get_agent("slow")).running_task_ids == ()


@pytest.mark.parametrize("n_agents", [1, 8])
async def test_one_agent_never_holds_more_than_its_limit_under_concurrent_claims(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, n_agents: int
) -> None:
    coordinators = await _coordinators(cp, cp_factory, N_COORDINATORS)
    for k in range(40):
        await cp.submit_task("work", {"n": k})
    names = [f"agent-{i}" for i in range(n_agents)]
    for name in names:
        await cp.register_agent(name, [], model="m", max_concurrent_tasks=3)
    results = await asyncio.gather(
        *(c.claim_task(name) for c in coordinators for name in names for _ in range(3))
    )
    claimed = [t for t in results if t is not None]
    assert len(claimed) == 3 * n_agents
    assert len({t.id for t in claimed}) == len(claimed)
    for name in names:
        assert sum(t.agent_id == name for t in claimed) == 3
        assert len((await cp.get_agent(name)).running_task_ids) == 3


async def test_a_burst_of_more_concurrent_calls_than_store_connections_all_succeed(
    cp: ControlPlaneCoordinator,
) -> None:
    """An application that fires many calls at once on one coordinator (e.g. a web
    server under load) has them queued for a connection, not refused."""
    n = 3 * cp.config.redis_max_connections
    ids = await asyncio.gather(*(cp.submit_task("work", {"n": k}) for k in range(n)))
    assert len(set(ids)) == n
    assert (await cp.store.counts("default")).pending == n
