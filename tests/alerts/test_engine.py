"""Alert rules end to end on SQLite and Redis: several engines on one store, each
transition notified exactly once, webhooks signed and retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

from aragora.alerts import (
    AlertEngine,
    AlertEvent,
    AlertKind,
    AlertStatus,
    AlertThresholds,
    WebhookSink,
    verify_signature,
)
from aragora.control_plane import ControlPlaneCoordinator, TaskStatus
from aragora.control_plane.instances import create_instance_registry
from aragora.control_plane.models import WorkspaceLimits
from tests.alerts.conftest import SECRET, EngineFactory, WebhookReceiver
from tests.conftest import Clock, CoordinatorFactory

HEARTBEAT_TIMEOUT_S = 30.0


def _of(events: list[AlertEvent], kind: AlertKind) -> list[tuple[str, AlertStatus]]:
    return [(e.key, e.status) for e in events if e.kind == kind]


async def _claim(cp: ControlPlaneCoordinator, task_id: str) -> tuple[str, str]:
    """Claim ``task_id`` for agent "a": the arguments that end its attempt."""
    task = await cp.claim_task("a")
    assert task is not None and task.id == task_id and task.lease_token is not None
    return task.id, task.lease_token


async def _three(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> list[ControlPlaneCoordinator]:
    coordinators = [cp, await cp_factory(), await cp_factory()]
    for other in coordinators[1:]:
        clock.attach(other)
    return coordinators


async def test_agent_offline_fires_once_and_resolves_once_across_three_engines(
    cp: ControlPlaneCoordinator,
    cp_factory: CoordinatorFactory,
    clock: Clock,
    engine_factory: EngineFactory,
    receiver: WebhookReceiver,
) -> None:
    coordinators = await _three(cp, cp_factory, clock)
    events: list[AlertEvent] = []
    engines = [
        await engine_factory(c, events=events, webhook_url=receiver.url, instance_id=f"e{i}")
        for i, c in enumerate(coordinators)
    ]
    await cp.register_agent("agent-1", ["debate"], model="m")
    assert await asyncio.gather(*(e.evaluate() for e in engines)) == [[], [], []]

    clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    assert (await cp.reap()).agents_offline == 1
    receiver.answer_next(500)  # the first delivery fails and must be retried
    sent = await asyncio.gather(*(e.evaluate() for e in engines))
    fired = [event for batch in sent for event in batch]
    assert [(e.key, e.status) for e in fired] == [
        ("agent_offline:default:agent-1", AlertStatus.FIRING)
    ]
    assert events == fired
    assert fired[0].details["agent_id"] == "agent-1" and fired[0].workspace_id == "default"
    # Evaluating again changes nothing: the alert is firing already.
    assert await asyncio.gather(*(e.evaluate() for e in engines)) == [[], [], []]

    first, retried = await receiver.wait_for(2)
    assert (first.status, retried.status) == (500, 200)
    assert first.body == retried.body
    assert first.headers["x-aragora-delivery"] == retried.headers["x-aragora-delivery"]
    for request in (first, retried):
        assert request.method == "POST" and request.path == "/hooks/alerts"
        assert request.headers["content-type"] == "application/json"
        timestamp = request.headers["x-aragora-timestamp"]
        expected = hmac.new(SECRET, f"{timestamp}.".encode() + request.body, hashlib.sha256)
        assert request.headers["x-aragora-signature"] == "sha256=" + expected.hexdigest()
        assert verify_signature(
            SECRET, request.body, timestamp, request.headers["x-aragora-signature"]
        )
        assert not verify_signature(
            b"another secret", request.body, timestamp, request.headers["x-aragora-signature"]
        )
    payload = json.loads(retried.body)
    assert payload["key"] == "agent_offline:default:agent-1"
    assert payload["kind"] == "agent_offline" and payload["status"] == "firing"
    assert payload["severity"] == "warning" and payload["instance_id"] in {"e0", "e1", "e2"}

    await coordinators[2].heartbeat("agent-1")
    sent = await asyncio.gather(*(e.evaluate() for e in engines))
    resolved = [event for batch in sent for event in batch]
    assert [(e.key, e.status) for e in resolved] == [
        ("agent_offline:default:agent-1", AlertStatus.RESOLVED)
    ]
    assert resolved[0].resolved_at is not None
    assert resolved[0].fired_at == fired[0].fired_at
    (*_, last) = await receiver.wait_for(3)
    assert json.loads(last.body)["status"] == "resolved"
    assert verify_signature(
        SECRET, last.body, last.headers["x-aragora-timestamp"], last.headers["x-aragora-signature"]
    )
    assert await asyncio.gather(*(e.evaluate() for e in engines)) == [[], [], []]
    for engine in engines:
        await engine.close()
    assert len(receiver.requests) == 3
    assert len(events) == 2


async def test_an_offline_agent_that_is_deregistered_resolves(
    cp: ControlPlaneCoordinator, clock: Clock, engine_factory: EngineFactory
) -> None:
    events: list[AlertEvent] = []
    engine = await engine_factory(cp, events=events)
    await cp.register_agent("a", [], model="m")
    clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    await cp.reap()
    await engine.evaluate()
    await cp.deregister_agent("a")
    await engine.evaluate()
    assert _of(events, AlertKind.AGENT_OFFLINE) == [
        ("agent_offline:default:a", AlertStatus.FIRING),
        ("agent_offline:default:a", AlertStatus.RESOLVED),
    ]
    assert await engine.list_firing() == []


async def test_a_condition_that_returns_fires_again(
    cp: ControlPlaneCoordinator, clock: Clock, engine_factory: EngineFactory
) -> None:
    events: list[AlertEvent] = []
    engine = await engine_factory(cp, events=events)
    await cp.register_agent("a", [], model="m")
    for _ in range(2):
        clock.advance(HEARTBEAT_TIMEOUT_S + 1)
        await cp.reap()
        await engine.evaluate()
        await cp.heartbeat("a")
        await engine.evaluate()
    assert [s for _, s in _of(events, AlertKind.AGENT_OFFLINE)] == [
        AlertStatus.FIRING,
        AlertStatus.RESOLVED,
        AlertStatus.FIRING,
        AlertStatus.RESOLVED,
    ]


async def test_breaker_open_fires_and_closing_resolves(
    cp: ControlPlaneCoordinator, clock: Clock, engine_factory: EngineFactory
) -> None:
    events: list[AlertEvent] = []
    engine = await engine_factory(cp, events=events)
    await cp.register_agent("a", [], model="m")
    for _ in range(cp.config.breaker_min_calls):
        await cp.submit_task("t", {}, max_retries=0)
        task = await cp.claim_task("a")
        assert task is not None and task.lease_token is not None
        await cp.fail_task(task.id, "boom", lease_token=task.lease_token)
    assert (await cp.get_breaker("a")).state.value == "open"
    await engine.evaluate()
    assert _of(events, AlertKind.BREAKER_OPEN) == [("breaker_open:default:a", AlertStatus.FIRING)]
    opened = next(e for e in events if e.kind == AlertKind.BREAKER_OPEN)
    assert opened.details["state"] == "open" and opened.details["failures"] >= 1

    clock.advance(cp.config.breaker_open_s + 1)
    await cp.heartbeat("a")
    for _ in range(cp.config.breaker_half_open_max_calls):
        await cp.submit_task("t", {})
        task = await cp.claim_task("a")
        assert task is not None and task.lease_token is not None
        await engine.evaluate()  # half-open: still firing, nothing new
        await cp.complete_task(task.id, "ok", lease_token=task.lease_token)
    assert (await cp.get_breaker("a")).state.value == "closed"
    await engine.evaluate()
    assert _of(events, AlertKind.BREAKER_OPEN) == [
        ("breaker_open:default:a", AlertStatus.FIRING),
        ("breaker_open:default:a", AlertStatus.RESOLVED),
    ]


async def test_a_dead_lettered_task_is_reported_once(
    cp: ControlPlaneCoordinator,
    cp_factory: CoordinatorFactory,
    clock: Clock,
    engine_factory: EngineFactory,
) -> None:
    coordinators = await _three(cp, cp_factory, clock)
    events: list[AlertEvent] = []
    engines = [await engine_factory(c, events=events) for c in coordinators]
    await cp.register_agent("a", [], model="m")
    done_id = await cp.submit_task("t", {})
    task_id = await cp.submit_task("t", {}, max_retries=1)
    claimed_id, lease = await _claim(cp, done_id)
    await cp.complete_task(claimed_id, 1, lease_token=lease)
    for _ in range(2):
        claimed_id, lease = await _claim(cp, task_id)
        failed = await cp.fail_task(claimed_id, "no luck", lease_token=lease)
        clock.advance(cp.config.retry_backoff_max_s + 1)
    assert failed.status is TaskStatus.FAILED
    engines[0].observe_task(failed)  # the event path...
    engines[1].observe_task(failed)
    await engines[0].flush()
    await engines[1].flush()
    await asyncio.gather(*(e.evaluate() for e in engines))  # ...and the schedule
    key = f"task_dead_lettered:default:{task_id}"
    assert _of(events, AlertKind.TASK_DEAD_LETTERED) == [(key, AlertStatus.FIRING)]
    event = next(e for e in events if e.kind == AlertKind.TASK_DEAD_LETTERED)
    assert event.details["attempts"] == 2 and event.details["last_error"] == "no luck"
    # Event alerts never resolve, and are not listed as firing conditions.
    assert await engines[2].list_firing() == []


async def test_failed_tasks_older_than_the_lookback_are_not_reported(
    cp: ControlPlaneCoordinator, clock: Clock, engine_factory: EngineFactory
) -> None:
    events: list[AlertEvent] = []
    thresholds = AlertThresholds(dead_letter_lookback_s=60.0)
    engine = await engine_factory(cp, events=events, thresholds=thresholds)
    await cp.register_agent("a", [], model="m")
    await cp.submit_task("t", {}, max_retries=0)
    task = await cp.claim_task("a")
    assert task is not None and task.lease_token is not None
    await cp.fail_task(task.id, "old", lease_token=task.lease_token)
    clock.advance(61)
    await cp.heartbeat("a")
    await engine.evaluate()
    assert _of(events, AlertKind.TASK_DEAD_LETTERED) == []


async def test_a_stalled_queue_fires_and_resolves_once_claimed(
    cp: ControlPlaneCoordinator, clock: Clock, engine_factory: EngineFactory
) -> None:
    events: list[AlertEvent] = []
    thresholds = AlertThresholds(queue_oldest_pending_max_age_s=120.0)
    engine = await engine_factory(cp, events=events, thresholds=thresholds)
    await cp.submit_task("t", {}, ["gpu"])
    await cp.submit_task("t", {}, ["gpu"])
    clock.advance(100)
    await engine.evaluate()
    assert _of(events, AlertKind.QUEUE_STALLED) == []
    clock.advance(30)
    await engine.evaluate()
    assert _of(events, AlertKind.QUEUE_STALLED) == [
        ("queue_stalled:default:queue", AlertStatus.FIRING)
    ]
    stalled = next(e for e in events if e.kind == AlertKind.QUEUE_STALLED)
    assert stalled.details["oldest_pending_age_s"] >= 130
    assert stalled.details["pending"] == 2 and not stalled.details["scan_truncated"]

    await cp.register_agent("gpu-1", ["gpu"], model="m", max_concurrent_tasks=2)
    assert len(await cp.claim_tasks("gpu-1", max_tasks=2)) == 2
    await engine.evaluate()
    assert _of(events, AlertKind.QUEUE_STALLED)[-1] == (
        "queue_stalled:default:queue",
        AlertStatus.RESOLVED,
    )


async def test_a_lost_instance_fires_and_resolves_when_it_beats_again(
    cp: ControlPlaneCoordinator,
    cp_factory: CoordinatorFactory,
    clock: Clock,
    engine_factory: EngineFactory,
) -> None:
    coordinators = await _three(cp, cp_factory, clock)
    registries = [
        create_instance_registry(c.store, instance_id=f"inst-{i}")
        for i, c in enumerate(coordinators)
    ]
    for registry in registries:
        await registry.register()
    events: list[AlertEvent] = []
    engines = [
        await engine_factory(c, events=events, instances=r)
        for c, r in zip(coordinators, registries, strict=True)
    ]
    clock.advance(20)
    await registries[0].beat()
    await registries[1].beat()
    clock.advance(15)
    await asyncio.gather(*(e.evaluate() for e in engines[:2]))
    assert _of(events, AlertKind.INSTANCE_LOST) == [("instance_lost:inst-2", AlertStatus.FIRING)]
    lost = next(e for e in events if e.kind == AlertKind.INSTANCE_LOST)
    assert lost.severity.value == "critical" and lost.instance_id in {"inst-0", "inst-1"}

    await registries[2].beat()
    await asyncio.gather(*(e.evaluate() for e in engines))
    assert _of(events, AlertKind.INSTANCE_LOST) == [
        ("instance_lost:inst-2", AlertStatus.FIRING),
        ("instance_lost:inst-2", AlertStatus.RESOLVED),
    ]


async def test_the_budget_soft_limit_is_notified_once(
    cp: ControlPlaneCoordinator,
    cp_factory: CoordinatorFactory,
    clock: Clock,
    engine_factory: EngineFactory,
) -> None:
    coordinators = await _three(cp, cp_factory, clock)
    events: list[AlertEvent] = []
    engines = [await engine_factory(c, events=events) for c in coordinators]
    await cp.set_workspace_limits("default", WorkspaceLimits(budget=20.0, budget_soft_ratio=0.5))
    await asyncio.gather(
        *(c.submit_task("t", {}, cost_estimate=2.0) for c in coordinators for _ in range(2))
    )
    for engine in engines:
        await engine.flush()
    budget = [e for e in events if e.kind == AlertKind.BUDGET_SOFT_LIMIT]
    assert len(budget) == 1
    spend = await cp.get_spend()
    assert budget[0].key == f"budget_soft_limit:default:{spend.period}"
    assert budget[0].details["budget"] == 20.0 and budget[0].workspace_id == "default"


async def test_an_unreachable_store_is_reported_by_the_instance_and_resolved(
    config: object, engine_factory: EngineFactory
) -> None:
    from aragora.control_plane import ControlPlaneConfig

    assert isinstance(config, ControlPlaneConfig)
    unopened = ControlPlaneCoordinator(config, run_reaper=False)
    events: list[AlertEvent] = []
    engine = await engine_factory(unopened, events=events, instance_id="me")
    assert await engine.evaluate() == []  # one failure is not yet an alert
    (fired,) = await engine.evaluate()
    assert (fired.key, fired.status) == ("store_unreachable:me", AlertStatus.FIRING)
    assert fired.severity.value == "critical" and fired.details["failed_evaluations"] == 2
    assert await engine.evaluate() == []
    try:
        await unopened.start()
        (resolved,) = await engine.evaluate()
        assert (resolved.key, resolved.status) == ("store_unreachable:me", AlertStatus.RESOLVED)
        assert events == [fired, resolved]
    finally:
        await unopened.close()


async def test_disabled_rules_are_not_evaluated(
    cp: ControlPlaneCoordinator, clock: Clock, engine_factory: EngineFactory
) -> None:
    events: list[AlertEvent] = []
    thresholds = AlertThresholds(disabled_rules=frozenset({"agent_offline"}))
    engine = await engine_factory(cp, events=events, thresholds=thresholds)
    await cp.register_agent("a", [], model="m")
    clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    await cp.reap()
    assert await engine.evaluate() == []


async def test_a_failing_hook_does_not_stop_other_sinks(
    cp: ControlPlaneCoordinator,
    clock: Clock,
    engine_factory: EngineFactory,
    receiver: WebhookReceiver,
) -> None:
    def broken(event: AlertEvent) -> None:
        raise RuntimeError("hook bug")

    received: list[AlertEvent] = []

    async def async_hook(event: AlertEvent) -> None:
        received.append(event)

    engine = await engine_factory(
        cp, webhook_url=receiver.url, hooks=[broken, async_hook], sinks=[]
    )
    await cp.register_agent("a", [], model="m")
    clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    await cp.reap()
    (event,) = await engine.evaluate()
    await engine.close()
    assert received == [event]
    assert len(receiver.requests) == 1


async def test_engines_in_a_loop_evaluate_on_their_own(
    cp: ControlPlaneCoordinator, clock: Clock, receiver: WebhookReceiver
) -> None:
    await cp.register_agent("a", [], model="m")
    clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    await cp.reap()
    got: asyncio.Future[AlertEvent] = asyncio.get_running_loop().create_future()

    def hook(event: AlertEvent) -> None:
        if not got.done():
            got.set_result(event)

    sink = WebhookSink(receiver.url, SECRET)
    async with AlertEngine(
        cp, thresholds=AlertThresholds(evaluate_interval_s=0.01), hooks=[hook], sinks=[sink]
    ):
        event = await asyncio.wait_for(got, 10)
    assert event.key == "agent_offline:default:a"
    assert len(receiver.requests) == 1, "closing the engine drained the webhook"
