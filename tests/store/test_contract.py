"""The store contract: every rule of ``aragora.store.base``, run on every store.

Each test drives a coordinator on a real store (a SQLite file, or Redis under a key
prefix of its own) and moves time with the store clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from aragora.control_plane import (
    AgentNotFoundError,
    AgentStatus,
    BreakerState,
    ControlPlaneCoordinator,
    InvalidStateError,
    LeaseLostError,
    PayloadTooLargeError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    ValidationError,
)
from tests.conftest import Clock, CoordinatorFactory

# -- submit, get, idempotency -----------------------------------------------------------


async def test_submitted_task_is_pending_with_its_fields(cp: ControlPlaneCoordinator) -> None:
    task_id = await cp.submit_task(
        "debate",
        {"topic": "x", "n": [1, 2]},
        ["search", "debate", "debate"],
        TaskPriority.HIGH,
        timeout_s=12.5,
        max_retries=1,
        metadata={"origin": "test"},
    )
    task = await cp.get_task(task_id)
    assert task.status is TaskStatus.PENDING
    assert task.payload == {"topic": "x", "n": [1, 2]}
    assert task.priority is TaskPriority.HIGH
    assert task.required_capabilities == ("debate", "search")
    assert (task.attempt, task.max_retries, task.timeout_s) == (0, 1, 12.5)
    assert task.metadata == {"origin": "test"}
    assert task.lease_token is None and task.result is None and task.errors == ()


async def test_same_idempotency_key_returns_first_task_and_creates_nothing(
    cp: ControlPlaneCoordinator,
) -> None:
    first = await cp.submit_task("t", {"v": 1}, idempotency_key="k-1")
    again = await cp.submit_task("t", {"v": 2}, idempotency_key="k-1")
    other = await cp.submit_task("t", {"v": 3}, idempotency_key="k-2")
    assert again == first
    assert other != first
    assert (await cp.get_task(first)).payload == {"v": 1}
    assert (await cp.store.counts("default")).pending == 2


async def test_idempotency_key_is_scoped_to_the_workspace(cp: ControlPlaneCoordinator) -> None:
    a = await cp.submit_task("t", {}, idempotency_key="k", workspace_id="alpha")
    b = await cp.submit_task("t", {}, idempotency_key="k", workspace_id="beta")
    assert a != b


async def test_unknown_task_is_not_found(cp: ControlPlaneCoordinator) -> None:
    with pytest.raises(TaskNotFoundError):
        await cp.get_task("nope")


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"task_type": ""}, "task_type"),
        ({"task_type": "x" * 129}, "task_type"),
        ({"task_type": "has space"}, "task_type"),
        ({"priority": "urgent"}, "priority"),
        ({"required_capabilities": ["a,b"]}, "required_capabilities"),
        ({"required_capabilities": "debate"}, "required_capabilities"),
        ({"payload": {"x": float("nan")}}, "payload"),
        ({"payload": {"x": object()}}, "payload"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"workspace_id": "no spaces"}, "workspace_id"),
        ({"workspace_id": "trailing\n"}, "workspace_id"),
        ({"task_type": "trailing\n"}, "task_type"),
        ({"payload": {"s": "\ud800"}}, "payload"),
        ({"payload": _nested(2000)}, "payload"),
    ],
)
async def test_bad_submission_names_the_field_and_changes_nothing(
    cp: ControlPlaneCoordinator, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"task_type": "t", "payload": {}} | kwargs
    with pytest.raises(ValidationError) as raised:
        await cp.submit_task(**args)  # type: ignore[arg-type]
    assert raised.value.field == field
    assert (await cp.store.counts("default")).total == 0


async def test_payload_over_the_limit_is_rejected(cp_factory: CoordinatorFactory) -> None:
    cp = await cp_factory(max_payload_bytes=100)
    with pytest.raises(PayloadTooLargeError) as raised:
        await cp.submit_task("t", {"blob": "x" * 200})
    assert raised.value.field == "payload" and raised.value.limit_bytes == 100
    assert (await cp.store.counts("default")).total == 0


# -- claim: priority, FIFO, capabilities, capacity -----------------------------------


async def test_claims_follow_priority_then_submit_order(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=8)
    order = ["low", "normal", "critical", "high", "low", "critical", "normal", "high"]
    ids = [await cp.submit_task("t", {"i": i}, priority=p) for i, p in enumerate(order)]
    claimed = [await cp.claim_task("a") for _ in order]
    got = [(t.priority.value, t.payload["i"]) for t in claimed if t is not None]
    assert got == [
        ("critical", 2),
        ("critical", 5),
        ("high", 3),
        ("high", 7),
        ("normal", 1),
        ("normal", 6),
        ("low", 0),
        ("low", 4),
    ]
    assert len(ids) == 8
    assert await cp.claim_task("a") is None


async def test_agent_only_gets_tasks_whose_capabilities_it_has(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("searcher", ["search"], model="m", max_concurrent_tasks=10)
    await cp.register_agent("both", ["debate", "search"], model="m", max_concurrent_tasks=10)
    debate = await cp.submit_task("t", {}, ["debate"], TaskPriority.CRITICAL)
    both = await cp.submit_task("t", {}, ["debate", "search"], TaskPriority.HIGH)
    search = await cp.submit_task("t", {}, ["search"], TaskPriority.LOW)
    anyone = await cp.submit_task("t", {}, [], TaskPriority.LOW)

    first = await cp.claim_task("searcher")
    second = await cp.claim_task("searcher")
    assert first is not None and second is not None
    assert {first.id, second.id} == {search, anyone}
    assert await cp.claim_task("searcher") is None

    got = [await cp.claim_task("both"), await cp.claim_task("both")]
    assert [t.id for t in got if t is not None] == [debate, both]


async def test_agent_never_gets_another_workspaces_task(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", ["x"], model="m", workspace_id="alpha")
    await cp.submit_task("t", {}, ["x"], workspace_id="beta")
    assert await cp.claim_task("a", workspace_id="alpha") is None
    with pytest.raises(AgentNotFoundError):
        await cp.claim_task("a", workspace_id="beta")
    with pytest.raises(AgentNotFoundError):
        await cp.get_agent("a", workspace_id="beta")


async def test_another_workspaces_task_is_not_found(cp: ControlPlaneCoordinator) -> None:
    task_id = await cp.submit_task("t", {}, workspace_id="alpha")
    for call in (cp.get_task, cp.cancel_task, cp.retry_task):
        with pytest.raises(TaskNotFoundError):
            await call(task_id, workspace_id="beta")
    page = await cp.list_tasks(workspace_id="beta")
    assert page.tasks == []


async def test_claim_by_unknown_agent_is_an_error(cp: ControlPlaneCoordinator) -> None:
    await cp.submit_task("t", {})
    with pytest.raises(AgentNotFoundError):
        await cp.claim_task("ghost")
    assert (await cp.store.counts("default")).pending == 1


async def test_agent_holds_at_most_its_concurrency_and_is_busy_meanwhile(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=2)
    for _ in range(3):
        await cp.submit_task("t", {})
    assert (await cp.get_agent("a")).status is AgentStatus.IDLE
    first, second = await cp.claim_task("a"), await cp.claim_task("a")
    assert first is not None and second is not None
    assert await cp.claim_task("a") is None
    agent = await cp.get_agent("a")
    assert agent.status is AgentStatus.BUSY
    assert set(agent.running_task_ids) == {first.id, second.id}
    assert first.lease_token
    await cp.complete_task(first.id, 1, lease_token=first.lease_token)
    assert await cp.claim_task("a") is not None


async def test_claim_starts_an_attempt_with_a_lease(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, timeout_s=60)
    task = await cp.claim_task("a")
    assert task is not None and task.id == task_id
    assert task.status is TaskStatus.RUNNING and task.attempt == 1 and task.agent_id == "a"
    assert task.lease_token and task.started_at is not None
    assert task.lease_expires_at == pytest.approx(task.started_at + 60)


async def test_many_concurrent_claimers_never_share_a_task(cp_factory: CoordinatorFactory) -> None:
    coordinators = [await cp_factory() for _ in range(4)]
    main = coordinators[0]
    for i in range(12):
        await main.register_agent(f"a{i}", [], model="m", max_concurrent_tasks=5)
    ids = {await main.submit_task("t", {"i": i}) for i in range(40)}
    results = await asyncio.gather(
        *(coordinators[i % 4].claim_task(f"a{i % 12}") for i in range(60))
    )
    claimed = [t.id for t in results if t is not None]
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == ids


# -- waiting -------------------------------------------------------------------------------


async def test_waiting_claim_wakes_when_a_task_arrives_from_another_coordinator(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    other = await cp_factory()
    await cp.register_agent("a", ["x"], model="m")
    waiting = asyncio.create_task(cp.claim_task("a", wait_s=20))
    await asyncio.sleep(0)  # let the claim register and find nothing
    task_id = await other.submit_task("t", {}, ["x"])
    task = await asyncio.wait_for(waiting, 10)
    assert task is not None and task.id == task_id


async def test_waiting_claim_returns_none_when_the_wait_ends(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    assert await cp.claim_task("a", wait_s=0.05) is None


async def test_wait_for_result_across_coordinators(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    worker = await cp_factory()
    await worker.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {"q": 1})
    waiting = asyncio.create_task(cp.wait_for_result(task_id, timeout=20))
    task = await worker.claim_task("a", wait_s=5)
    assert task is not None and task.lease_token
    await worker.complete_task(task.id, {"a": 2}, lease_token=task.lease_token)
    assert await asyncio.wait_for(waiting, 10) == {"a": 2}
    assert await cp.wait_for_result(task_id, timeout=0) == {"a": 2}


async def test_wait_for_result_times_out(cp: ControlPlaneCoordinator) -> None:
    task_id = await cp.submit_task("t", {})
    with pytest.raises(TimeoutError):
        await cp.wait_for_result(task_id, timeout=0.05)


# -- fencing -------------------------------------------------------------------------------


async def test_wrong_or_stale_lease_is_rejected_and_changes_nothing(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m")
    await cp.submit_task("t", {})
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    with pytest.raises(LeaseLostError):
        await cp.complete_task(task.id, "forged", lease_token="not-the-token")
    with pytest.raises(LeaseLostError):
        await cp.fail_task(task.id, "boom", lease_token="not-the-token")
    assert (await cp.get_task(task.id)).status is TaskStatus.RUNNING

    await cp.complete_task(task.id, "first", lease_token=task.lease_token)
    with pytest.raises(LeaseLostError):
        await cp.complete_task(task.id, "second", lease_token=task.lease_token)
    with pytest.raises(LeaseLostError):
        await cp.fail_task(task.id, "late", lease_token=task.lease_token)
    done = await cp.get_task(task.id)
    assert (done.status, done.result, done.errors) == (TaskStatus.COMPLETED, "first", ())


async def test_lease_of_an_earlier_attempt_is_rejected(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await cp.register_agent("a", [], model="m")
    await cp.submit_task("t", {})
    first = await cp.claim_task("a")
    assert first is not None and first.lease_token
    await cp.fail_task(first.id, "flaky", lease_token=first.lease_token)
    clock.advance(cp.config.retry_backoff_max_s + 1)
    second = await cp.claim_task("a")
    assert second is not None and second.id == first.id and second.attempt == 2
    with pytest.raises(LeaseLostError):
        await cp.complete_task(first.id, "stale", lease_token=first.lease_token)
    assert second.lease_token
    await cp.complete_task(second.id, "fresh", lease_token=second.lease_token)
    assert (await cp.get_task(first.id)).result == "fresh"


async def test_completion_records_cost_and_finish_time(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    await cp.submit_task("t", {})
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    done = await cp.complete_task(task.id, {"ok": True}, lease_token=task.lease_token, cost=0.25)
    assert done.status is TaskStatus.COMPLETED and done.cost == 0.25
    assert done.finished_at is not None and done.lease_token is None
    assert (await cp.get_agent("a")).status is AgentStatus.IDLE


# -- retries -------------------------------------------------------------------------------


async def test_failed_attempt_waits_out_its_backoff_then_runs_again(
    cp_factory: CoordinatorFactory,
) -> None:
    cp = await cp_factory(retry_backoff_base_s=10.0, retry_backoff_max_s=100.0, retry_jitter=0.0)
    clock = Clock(cp)
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, max_retries=2)

    delays = []
    for attempt in (1, 2):
        task = await cp.claim_task("a")
        assert task is not None and task.attempt == attempt and task.lease_token
        failed = await cp.fail_task(task_id, f"error {attempt}", lease_token=task.lease_token)
        assert failed.status is TaskStatus.PENDING and failed.available_at is not None
        assert failed.error == f"error {attempt}"
        delays.append(failed.available_at - (failed.errors[-1].at))
        outcome = await cp.store.claim("default", "a")
        assert outcome.task is None
        assert outcome.next_due_in_s == pytest.approx(delays[-1], abs=0.05)
        clock.advance(delays[-1] + 0.01)
    assert delays == [pytest.approx(10.0, abs=0.01), pytest.approx(20.0, abs=0.01)]

    task = await cp.claim_task("a")
    assert task is not None and task.attempt == 3 and task.lease_token
    final = await cp.fail_task(task_id, "error 3", lease_token=task.lease_token)
    assert final.status is TaskStatus.FAILED and final.finished_at is not None
    assert [(e.attempt, e.error, e.agent_id) for e in final.errors] == [
        (1, "error 1", "a"),
        (2, "error 2", "a"),
        (3, "error 3", "a"),
    ]
    with pytest.raises(TaskFailedError) as raised:
        await cp.wait_for_result(task_id, timeout=1)
    assert [e.error for e in raised.value.errors] == ["error 1", "error 2", "error 3"]


async def test_backoff_is_capped_and_jittered_within_bounds(cp_factory: CoordinatorFactory) -> None:
    cp = await cp_factory(retry_backoff_base_s=4.0, retry_backoff_max_s=6.0, retry_jitter=0.5)
    clock = Clock(cp)
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, max_retries=5)
    for attempt in range(1, 5):
        task = await cp.claim_task("a")
        assert task is not None and task.lease_token
        failed = await cp.fail_task(task_id, "x", lease_token=task.lease_token)
        assert failed.available_at is not None
        delay = failed.available_at - failed.errors[-1].at
        full = min(6.0, 4.0 * 2 ** (attempt - 1))
        assert full * 0.5 - 0.01 <= delay <= full + 0.01
        clock.advance(delay + 0.01)


async def test_non_retryable_failure_ends_the_task_at_once(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, max_retries=5)
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    failed = await cp.fail_task(task_id, "bad input", lease_token=task.lease_token, retryable=False)
    assert failed.status is TaskStatus.FAILED and len(failed.errors) == 1


async def test_manual_retry_requeues_a_failed_task_with_fresh_budget(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, max_retries=0)
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    await cp.fail_task(task_id, "once", lease_token=task.lease_token)
    retried = await cp.retry_task(task_id)
    assert retried.status is TaskStatus.PENDING and retried.error is None
    assert retried.agent_id is None and retried.lease_token is None
    assert retried.finished_at is None and len(retried.errors) == 1
    again = await cp.claim_task("a")
    assert again is not None and again.id == task_id and again.attempt == 2 and again.lease_token
    await cp.complete_task(task_id, "ok", lease_token=again.lease_token)
    assert await cp.wait_for_result(task_id, timeout=1) == "ok"


async def test_retry_of_a_task_that_did_not_fail_is_refused(cp: ControlPlaneCoordinator) -> None:
    task_id = await cp.submit_task("t", {})
    with pytest.raises(InvalidStateError):
        await cp.retry_task(task_id)
    assert (await cp.get_task(task_id)).status is TaskStatus.PENDING


# -- cancel --------------------------------------------------------------------------------


async def test_cancelled_pending_task_never_runs(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {})
    cancelled = await cp.cancel_task(task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert await cp.claim_task("a") is None
    assert (await cp.cancel_task(task_id)).status is TaskStatus.CANCELLED
    with pytest.raises(TaskCancelledError):
        await cp.wait_for_result(task_id, timeout=1)


async def test_cancelled_delayed_task_never_runs(cp: ControlPlaneCoordinator, clock: Clock) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {})
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    await cp.fail_task(task_id, "x", lease_token=task.lease_token)
    await cp.cancel_task(task_id)
    clock.advance(cp.config.retry_backoff_max_s + 1)
    await cp.reap()
    assert await cp.claim_task("a") is None
    assert (await cp.get_task(task_id)).status is TaskStatus.CANCELLED


async def test_agent_learns_of_cancel_by_heartbeat_and_cannot_complete(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {})
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    waiting = asyncio.create_task(cp.wait_for_result(task_id, timeout=10))
    await cp.cancel_task(task_id)
    with pytest.raises(TaskCancelledError):
        await waiting
    beat = await cp.heartbeat("a")
    assert beat.cancelled_task_ids == (task_id,)
    assert beat.agent.status is AgentStatus.IDLE
    assert (await cp.heartbeat("a")).cancelled_task_ids == ()
    with pytest.raises(TaskCancelledError):
        await cp.complete_task(task_id, "late", lease_token=task.lease_token)
    assert (await cp.get_task(task_id)).result is None


async def test_cancel_of_a_finished_task_is_refused(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {})
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    await cp.complete_task(task_id, 1, lease_token=task.lease_token)
    with pytest.raises(InvalidStateError):
        await cp.cancel_task(task_id)
    assert (await cp.get_task(task_id)).status is TaskStatus.COMPLETED


# -- agents, heartbeats, reaping -------------------------------------------------------------


async def test_register_again_updates_the_agent(cp: ControlPlaneCoordinator) -> None:
    first = await cp.register_agent("a", ["x"], model="m1", metadata={"v": 1})
    again = await cp.register_agent("a", ["y", "x"], model="m2", max_concurrent_tasks=3)
    assert again.capabilities == ("x", "y") and again.model == "m2"
    assert again.max_concurrent_tasks == 3 and again.metadata == {}
    assert again.registered_at == first.registered_at
    assert [a.agent_id for a in await cp.list_agents()] == ["a"]


async def test_silent_agent_goes_offline_and_its_tasks_return(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await cp.register_agent("dead", [], model="m", max_concurrent_tasks=2)
    await cp.register_agent("alive", [], model="m", max_concurrent_tasks=2)
    ids = {await cp.submit_task("t", {}) for _ in range(2)}
    held = [await cp.claim_task("dead"), await cp.claim_task("dead")]
    assert {t.id for t in held if t is not None} == ids

    clock.advance(cp.config.heartbeat_timeout - 1)
    await cp.heartbeat("alive")
    assert (await cp.reap()).agents_offline == 0
    clock.advance(2)
    report = await cp.reap()
    assert (report.agents_offline, report.tasks_requeued) == (1, 2)
    assert (await cp.reap()).agents_offline == 0  # idempotent
    assert (await cp.get_agent("dead")).status is AgentStatus.OFFLINE
    assert (await cp.get_agent("alive")).status is AgentStatus.IDLE

    clock.advance(cp.config.retry_backoff_max_s + 1)
    await cp.heartbeat("alive")
    again = [await cp.claim_task("alive"), await cp.claim_task("alive")]
    assert {t.id for t in again if t is not None} == ids
    for t in again:
        assert t is not None and t.attempt == 2
        assert [(e.error, e.agent_id) for e in t.errors] == [("agent offline", "dead")]
    assert await cp.claim_task("dead") is None


async def test_offline_agent_comes_back_with_a_heartbeat(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await cp.register_agent("a", [], model="m")
    clock.advance(cp.config.heartbeat_timeout + 1)
    await cp.reap()
    assert (await cp.get_agent("a")).status is AgentStatus.OFFLINE
    await cp.submit_task("t", {})
    assert await cp.claim_task("a") is None
    beat = await cp.heartbeat("a")
    assert beat.agent.status is AgentStatus.IDLE
    assert await cp.claim_task("a") is not None


async def test_task_running_past_its_timeout_is_a_failed_attempt(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, timeout_s=5, max_retries=0)
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    clock.advance(4)
    await cp.heartbeat("a")
    assert (await cp.reap()).tasks_failed == 0
    clock.advance(2)
    await cp.heartbeat("a")
    assert (await cp.reap()).tasks_failed == 1
    failed = await cp.get_task(task_id)
    assert failed.status is TaskStatus.FAILED
    assert "timed out" in (failed.error or "")
    with pytest.raises(LeaseLostError):
        await cp.complete_task(task_id, "late", lease_token=task.lease_token)
    assert (await cp.get_agent("a")).status is AgentStatus.IDLE


async def test_registering_again_returns_leased_tasks_at_once(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {})
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    restarted = await cp.register_agent("a", [], model="m")
    assert restarted.running_task_ids == () and restarted.status is AgentStatus.IDLE
    back = await cp.get_task(task_id)
    assert back.status is TaskStatus.PENDING
    assert [e.error for e in back.errors] == ["agent re-registered"]
    with pytest.raises(LeaseLostError):
        await cp.complete_task(task_id, "old process", lease_token=task.lease_token)


async def test_deregistered_agent_is_gone_and_its_tasks_return(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {})
    assert await cp.claim_task("a") is not None
    await cp.deregister_agent("a")
    with pytest.raises(AgentNotFoundError):
        await cp.get_agent("a")
    with pytest.raises(AgentNotFoundError):
        await cp.heartbeat("a")
    with pytest.raises(AgentNotFoundError):
        await cp.deregister_agent("a")
    assert (await cp.get_task(task_id)).status is TaskStatus.PENDING
    assert await cp.list_agents() == []


async def test_draining_agent_claims_nothing_until_it_resumes(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m")
    await cp.submit_task("t", {})
    beat = await cp.heartbeat("a", status=AgentStatus.DRAINING)
    assert beat.agent.status is AgentStatus.DRAINING
    assert await cp.claim_task("a") is None
    assert (await cp.heartbeat("a")).agent.status is AgentStatus.DRAINING
    await cp.heartbeat("a", status=AgentStatus.IDLE)
    assert await cp.claim_task("a") is not None


async def test_list_agents_filters_by_capability_and_status(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("s", ["search"], model="m")
    await cp.register_agent("d", ["debate"], model="m")
    await cp.submit_task("t", {}, ["debate"])
    assert await cp.claim_task("d") is not None
    assert [a.agent_id for a in await cp.list_agents(capability="search")] == ["s"]
    assert [a.agent_id for a in await cp.list_agents(status=AgentStatus.BUSY)] == ["d"]
    assert [a.agent_id for a in await cp.list_agents()] == ["d", "s"]


# -- listing, counts, cleanup --------------------------------------------------------------


async def test_list_tasks_pages_newest_first_and_filters(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    ids = [await cp.submit_task("even" if i % 2 == 0 else "odd", {"i": i}) for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await cp.list_tasks(limit=3, cursor=cursor)
        seen += [t.id for t in page.tasks]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    odd = await cp.list_tasks(task_type="odd", limit=10)
    assert [t.payload["i"] for t in odd.tasks] == [5, 3, 1]
    claimed = await cp.claim_task("a")
    assert claimed is not None
    running = await cp.list_tasks(TaskStatus.RUNNING)
    assert [t.id for t in running.tasks] == [claimed.id]
    assert len((await cp.list_tasks(TaskStatus.PENDING)).tasks) == 6


@pytest.mark.parametrize("cursor", ["not-a-cursor", "²", "1" * 40])
async def test_a_cursor_the_store_did_not_issue_is_refused(
    cp: ControlPlaneCoordinator, cursor: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        await cp.list_tasks(cursor=cursor)
    assert raised.value.field == "cursor"


async def test_breaker_survives_deregistration(cp_factory: CoordinatorFactory) -> None:
    cp = await cp_factory(breaker_min_calls=2, breaker_error_rate=0.5)
    await cp.register_agent("a", [], model="m")
    await _run_outcomes(cp, "a", "xx")
    await cp.deregister_agent("a")
    await cp.register_agent("a", [], model="m")
    assert (await cp.get_breaker("a")).state is BreakerState.OPEN
    await cp.submit_task("t", {})
    assert await cp.claim_task("a") is None


async def test_results_are_removed_after_their_ttl(
    cp_factory: CoordinatorFactory,
) -> None:
    cp = await cp_factory(result_ttl_s=100.0)
    clock = Clock(cp)
    await cp.register_agent("a", [], model="m")
    task_id = await cp.submit_task("t", {}, idempotency_key="once")
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token
    await cp.complete_task(task_id, "r", lease_token=task.lease_token)
    clock.advance(99)
    await cp.heartbeat("a")
    assert (await cp.reap()).tasks_expired == 0
    assert await cp.wait_for_result(task_id, timeout=1) == "r"
    clock.advance(2)
    await cp.heartbeat("a")
    assert (await cp.reap()).tasks_expired == 1
    with pytest.raises(TaskNotFoundError):
        await cp.get_task(task_id)
    assert (await cp.store.counts("default")).total == 0
    assert await cp.submit_task("t", {}, idempotency_key="once") != task_id


async def test_counts_add_up_in_every_state(cp: ControlPlaneCoordinator, clock: Clock) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=10)
    ids = [await cp.submit_task("t", {}, max_retries=1) for _ in range(6)]
    leased = [await cp.claim_task("a") for _ in range(4)]
    tokens = {t.id: t.lease_token for t in leased if t is not None and t.lease_token}
    await cp.complete_task(ids[0], 1, lease_token=tokens[ids[0]])
    await cp.fail_task(ids[1], "x", lease_token=tokens[ids[1]], retryable=False)
    await cp.fail_task(ids[2], "x", lease_token=tokens[ids[2]])
    await cp.cancel_task(ids[4])
    counts = await cp.store.counts("default")
    assert (counts.pending, counts.delayed, counts.running) == (2, 1, 1)
    assert (counts.completed, counts.failed, counts.cancelled) == (1, 1, 1)
    assert counts.total == 6


# -- circuit breaker -------------------------------------------------------------------------


async def _run_outcomes(cp: ControlPlaneCoordinator, agent: str, outcomes: str) -> None:
    """Claim and end one task per character: 'o' completes, 'x' fails."""
    for outcome in outcomes:
        await cp.submit_task("t", {}, max_retries=0)
        task = await cp.claim_task(agent)
        assert task is not None and task.lease_token
        if outcome == "o":
            await cp.complete_task(task.id, 1, lease_token=task.lease_token)
        else:
            await cp.fail_task(task.id, "boom", lease_token=task.lease_token)


async def test_breaker_opens_on_error_rate_not_only_consecutive_errors(
    cp_factory: CoordinatorFactory,
) -> None:
    cp = await cp_factory(breaker_min_calls=6, breaker_error_rate=0.5, breaker_window_s=60.0)
    await cp.register_agent("a", [], model="m")
    await _run_outcomes(cp, "a", "xoxox")
    assert (await cp.get_breaker("a")).state is BreakerState.CLOSED
    await _run_outcomes(cp, "a", "o")
    breaker = await cp.get_breaker("a")
    assert breaker.state is BreakerState.OPEN
    assert (breaker.calls, breaker.failures) == (6, 3)
    await cp.submit_task("t", {})
    assert await cp.claim_task("a") is None


async def test_breaker_forgets_outcomes_older_than_its_window(
    cp_factory: CoordinatorFactory,
) -> None:
    cp = await cp_factory(breaker_min_calls=4, breaker_error_rate=0.5, breaker_window_s=60.0)
    clock = Clock(cp)
    await cp.register_agent("a", [], model="m")
    await _run_outcomes(cp, "a", "xxx")
    clock.advance(61)
    await cp.heartbeat("a")
    await _run_outcomes(cp, "a", "xoo")
    breaker = await cp.get_breaker("a")
    assert breaker.state is BreakerState.CLOSED and breaker.calls == 3


async def test_breaker_half_opens_after_cool_down_then_closes_on_successes(
    cp_factory: CoordinatorFactory,
) -> None:
    cp = await cp_factory(
        breaker_min_calls=2,
        breaker_error_rate=0.5,
        breaker_open_s=30.0,
        breaker_half_open_max_calls=2,
    )
    clock = Clock(cp)
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=5)
    await _run_outcomes(cp, "a", "xx")
    assert (await cp.get_breaker("a")).state is BreakerState.OPEN
    for _ in range(3):
        await cp.submit_task("t", {})
    clock.advance(29)
    await cp.heartbeat("a")
    assert await cp.claim_task("a") is None
    clock.advance(2)
    await cp.heartbeat("a")
    trials = [await cp.claim_task("a"), await cp.claim_task("a")]
    assert all(t is not None for t in trials)
    breaker = await cp.get_breaker("a")
    assert breaker.state is BreakerState.HALF_OPEN and breaker.half_open_in_flight == 2
    assert await cp.claim_task("a") is None  # trials are bounded
    for t in trials:
        assert t is not None and t.lease_token
        await cp.complete_task(t.id, 1, lease_token=t.lease_token)
    assert (await cp.get_breaker("a")).state is BreakerState.CLOSED
    assert await cp.claim_task("a") is not None


async def test_failed_trial_reopens_the_breaker(cp_factory: CoordinatorFactory) -> None:
    cp = await cp_factory(breaker_min_calls=2, breaker_error_rate=0.5, breaker_open_s=30.0)
    clock = Clock(cp)
    await cp.register_agent("a", [], model="m")
    await _run_outcomes(cp, "a", "xx")
    clock.advance(31)
    await cp.heartbeat("a")
    await _run_outcomes(cp, "a", "x")
    breaker = await cp.get_breaker("a")
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == pytest.approx(await cp.store.now(), abs=1.0)


async def test_breaker_is_shared_by_every_coordinator(cp_factory: CoordinatorFactory) -> None:
    one = await cp_factory(breaker_min_calls=2, breaker_error_rate=0.5)
    two = await cp_factory(breaker_min_calls=2, breaker_error_rate=0.5)
    await one.register_agent("a", [], model="m")
    await _run_outcomes(one, "a", "xx")
    assert (await two.get_breaker("a")).state is BreakerState.OPEN
    await two.submit_task("t", {})
    assert await two.claim_task("a") is None


async def test_stored_payload_round_trips_exactly(cp: ControlPlaneCoordinator) -> None:
    payload = {"unicode": "é中🙂", "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    task_id = await cp.submit_task("t", payload)
    assert (await cp.get_task(task_id)).payload == payload
    assert json.dumps(payload)  # JSON-encodable by construction
