"""The alert state store on SQLite and Redis: one winner per transition, stale facts
refused, event alerts forgotten after their retention."""

from __future__ import annotations

import asyncio

from aragora.alerts.models import AlertSeverity, AlertStatus, Condition
from aragora.alerts.state import AlertStateStore, create_alert_state_store
from aragora.control_plane import ControlPlaneCoordinator
from tests.conftest import Clock, CoordinatorFactory

RETENTION_S = 3600.0


def _condition(key: str = "agent_offline:ws:a") -> Condition:
    return Condition(
        key=key,
        kind="agent_offline",
        severity=AlertSeverity.WARNING,
        summary="agent a is offline",
        workspace_id="ws",
        details={"agent_id": "a", "silent_s": 31.5, "nested": {"x": [1, 2]}},
    )


async def _fire(state: AlertStateStore, observed_at: float, one_shot: bool = False) -> object:
    return await state.fire(
        _condition(), observed_at=observed_at, one_shot=one_shot, retention_s=RETENTION_S
    )


async def test_fire_and_resolve_happen_once(cp: ControlPlaneCoordinator) -> None:
    state = create_alert_state_store(cp.store)
    now = await cp.store.now()
    record = await state.fire(
        _condition(), observed_at=now, one_shot=False, retention_s=RETENTION_S
    )
    assert record is not None and record.status is AlertStatus.FIRING
    assert record.details == {"agent_id": "a", "silent_s": 31.5, "nested": {"x": [1, 2]}}
    assert record.workspace_id == "ws" and record.severity is AlertSeverity.WARNING
    assert now - 1 <= record.fired_at <= now + 5 and record.resolved_at is None
    assert await _fire(state, now) is None
    assert [r.key for r in await state.list_firing()] == ["agent_offline:ws:a"]
    assert await state.get("agent_offline:ws:a") == record

    resolved = await state.resolve("agent_offline:ws:a", observed_at=now, retention_s=RETENTION_S)
    assert resolved is not None and resolved.status is AlertStatus.RESOLVED
    assert resolved.fired_at == record.fired_at and resolved.resolved_at is not None
    assert resolved.summary == record.summary and resolved.details == record.details
    assert await state.resolve("agent_offline:ws:a", observed_at=now, retention_s=1) is None
    assert await state.list_firing() == []
    assert await state.resolve("never:fired", observed_at=now, retention_s=1) is None


async def test_a_transition_observed_before_the_last_one_is_refused(
    cp: ControlPlaneCoordinator,
) -> None:
    state = create_alert_state_store(cp.store)
    now = await cp.store.now()
    assert await _fire(state, now) is not None
    stale = await state.resolve("agent_offline:ws:a", observed_at=now - 5, retention_s=60)
    assert stale is None
    assert await state.resolve("agent_offline:ws:a", observed_at=now + 5, retention_s=60)
    assert await _fire(state, now + 1) is None, "older facts never undo a newer resolve"
    assert await _fire(state, now + 6) is not None


async def test_concurrent_transitions_have_exactly_one_winner(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    coordinators = [cp, await cp_factory(), await cp_factory()]
    states = [create_alert_state_store(c.store) for c in coordinators]
    now = await cp.store.now()
    fired = await asyncio.gather(*(_fire(s, now) for s in states for _ in range(5)))
    assert sum(r is not None for r in fired) == 1
    resolved = await asyncio.gather(
        *(
            s.resolve("agent_offline:ws:a", observed_at=now, retention_s=60)
            for s in states
            for _ in range(5)
        )
    )
    assert sum(r is not None for r in resolved) == 1


async def test_event_alerts_fire_once_never_resolve_and_are_forgotten(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    state = create_alert_state_store(cp.store)
    now = await cp.store.now()
    record = await _fire(state, now, one_shot=True)
    assert record is not None
    assert await _fire(state, now + 1, one_shot=True) is None
    assert await state.resolve("agent_offline:ws:a", observed_at=now + 1, retention_s=60) is None
    assert await state.list_firing() == [], "event alerts are not firing conditions"
    stored = await state.get("agent_offline:ws:a")
    assert stored is not None and stored.one_shot
    clock.advance(RETENTION_S + 1)
    assert await state.get("agent_offline:ws:a") is None
    assert await _fire(state, now + RETENTION_S + 1, one_shot=True) is not None
