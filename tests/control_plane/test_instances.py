"""Server instances and exclusive leases, on SQLite and Redis, across three coordinators
that share one store (each with its own connection), with the store clock moved by hand."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from aragora.control_plane import ControlPlaneCoordinator, ValidationError
from aragora.control_plane.instances import (
    InstancePresence,
    InstanceRegistry,
    create_instance_registry,
)
from tests.conftest import Clock, CoordinatorFactory

TIMEOUT_S = 30.0


async def _registries(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> list[InstanceRegistry]:
    coordinators = [cp, await cp_factory(), await cp_factory()]
    for other in coordinators[1:]:
        clock.attach(other)
    return [
        create_instance_registry(c.store, instance_id=f"inst-{i}", host=f"host-{i}", pid=100 + i)
        for i, c in enumerate(coordinators)
    ]


async def test_instances_register_beat_list_and_go(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    registries = await _registries(cp, cp_factory, clock)
    infos = await asyncio.gather(*(r.register() for r in registries))
    assert [i.instance_id for i in infos] == ["inst-0", "inst-1", "inst-2"]
    assert infos[1].host == "host-1" and infos[1].pid == 101 and not infos[1].is_gone
    start = infos[0].last_beat_at

    live = await registries[2].list_live(TIMEOUT_S)
    assert [i.instance_id for i in live] == ["inst-0", "inst-1", "inst-2"]

    clock.advance(20)
    beat = await registries[0].beat({"requests": 7, "tasks_claimed": 3})
    assert beat.counters == {"requests": 7, "tasks_claimed": 3}
    assert beat.last_beat_at >= start + 20
    await registries[1].beat()
    clock.advance(15)  # inst-2 has been silent for 35 s, the others for 15 s

    marked = await asyncio.gather(*(r.mark_gone(TIMEOUT_S) for r in registries))
    flat = [i for batch in marked for i in batch]
    assert [i.instance_id for i in flat] == ["inst-2"], "marked by exactly one caller"
    assert flat[0].gone_at is not None and flat[0].gone_at >= start + 35
    assert await registries[0].mark_gone(TIMEOUT_S) == []  # idempotent

    live = await registries[1].list_live(TIMEOUT_S)
    assert [i.instance_id for i in live] == ["inst-0", "inst-1"]
    assert live[0].counters == {"requests": 7, "tasks_claimed": 3}
    gone = await registries[0].gone_since(start)
    assert [i.instance_id for i in gone] == ["inst-2"] and gone[0].pid == 102
    assert await registries[0].gone_since(start + 3600) == []

    back = await registries[2].beat({"requests": 1})
    assert not back.is_gone and back.started_at == infos[2].started_at
    assert await registries[0].gone_since(start) == []
    live = await registries[0].list_live(TIMEOUT_S)
    assert [i.instance_id for i in live] == ["inst-0", "inst-1", "inst-2"]

    await registries[1].deregister()
    clock.advance(60)
    assert [i.instance_id for i in await registries[0].mark_gone(TIMEOUT_S)] == [
        "inst-0",
        "inst-2",
    ], "a deregistered instance is never reported gone"


async def test_gone_records_are_forgotten_after_the_retention(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    other = await cp_factory()
    clock.attach(other)
    lost = create_instance_registry(other.store, instance_id="lost")
    keeper = create_instance_registry(cp.store, gone_retention_s=100.0)
    await lost.register()
    clock.advance(TIMEOUT_S + 1)
    assert [i.instance_id for i in await keeper.mark_gone(TIMEOUT_S)] == ["lost"]
    clock.advance(50)
    await keeper.mark_gone(TIMEOUT_S)
    assert [i.instance_id for i in await keeper.gone_since(0)] == ["lost"]
    clock.advance(51)
    await keeper.mark_gone(TIMEOUT_S)
    assert await keeper.gone_since(0) == []


async def test_exactly_one_of_three_contenders_holds_the_lease(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    registries = await _registries(cp, cp_factory, clock)
    leases = await asyncio.gather(*(r.acquire_lease("reaper", 10.0) for r in registries))
    winners = [i for i, lease in enumerate(leases) if lease.held]
    assert len(winners) == 1
    winner = registries[winners[0]]
    token = leases[winners[0]].fencing_token
    assert token is not None
    for lease in leases:
        assert lease.holder_id == winner.instance_id
        assert lease.fencing_token in (None, token)

    # The holder keeps the lease by renewing within the ttl; the others stay refused.
    for _ in range(3):
        clock.advance(6)
        again = await asyncio.gather(*(r.acquire_lease("reaper", 10.0) for r in registries))
        assert [lease.held for lease in again] == [r is winner for r in registries]
        assert again[winners[0]].fencing_token == token

    # Without renewals the lease expires and goes to a contender with a larger token.
    clock.advance(11)
    losers = [r for r in registries if r is not winner]
    taken = await losers[0].acquire_lease("reaper", 10.0)
    assert taken.held and taken.fencing_token is not None and taken.fencing_token > token
    stale = await winner.acquire_lease("reaper", 10.0)
    assert not stale.held and stale.fencing_token is None
    assert stale.holder_id == losers[0].instance_id
    assert not (await losers[1].acquire_lease("reaper", 10.0)).held


async def test_a_stale_token_never_renews_after_expiry(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    first, second, _ = await _registries(cp, cp_factory, clock)
    granted = await first.acquire_lease("cleanup", 5.0)
    assert granted.held and granted.fencing_token is not None
    clock.advance(6)
    # Expired and nobody took it: the old holder gets it again, but as a new term.
    renewed = await first.acquire_lease("cleanup", 5.0)
    assert renewed.held and renewed.fencing_token == granted.fencing_token + 1
    clock.advance(6)
    taken = await second.acquire_lease("cleanup", 5.0)
    assert taken.held and taken.fencing_token == granted.fencing_token + 2
    for _ in range(2):
        assert not (await first.acquire_lease("cleanup", 5.0)).held


async def test_run_exclusive_runs_the_work_on_one_instance_per_term(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    registries = await _registries(cp, cp_factory, clock)
    ran: list[tuple[str, int]] = []

    def work_of(registry: InstanceRegistry) -> Callable[[int], Awaitable[str]]:
        async def work(token: int) -> str:
            ran.append((registry.instance_id, token))
            return registry.instance_id

        return work

    runs = await asyncio.gather(
        *(r.run_exclusive("daily-report", work_of(r), ttl_s=30.0) for r in registries)
    )
    assert len(ran) == 1
    held = [run for run in runs if run.held]
    assert len(held) == 1 and held[0].result == ran[0][0]
    assert held[0].fencing_token == ran[0][1]
    assert all(run.result is None and run.fencing_token is None for run in runs if not run.held)


async def test_release_hands_the_lease_on_with_a_larger_token(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    first, second, _ = await _registries(cp, cp_factory, clock)
    granted = await first.acquire_lease("job", 60.0)
    assert not await second.release_lease("job"), "only the holder releases"
    assert not (await second.acquire_lease("job", 60.0)).held
    assert await first.release_lease("job")
    assert not await first.release_lease("job")
    taken = await second.acquire_lease("job", 60.0)
    assert taken.held and taken.fencing_token is not None
    assert granted.fencing_token is not None and taken.fencing_token > granted.fencing_token


async def test_leases_of_different_names_are_independent(cp: ControlPlaneCoordinator) -> None:
    registry = create_instance_registry(cp.store)
    other = create_instance_registry(cp.store)
    assert (await registry.acquire_lease("a", 10.0)).held
    assert (await other.acquire_lease("b", 10.0)).held
    assert not (await other.acquire_lease("a", 10.0)).held


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r: r.beat({"Bad Name": 1}), "counts"),
        (lambda r: r.beat({"x": 1.5}), "counts"),
        (lambda r: r.beat({f"c{i}": i for i in range(40)}), "counts"),
        (lambda r: r.list_live(0), "timeout_s"),
        (lambda r: r.mark_gone(float("nan")), "timeout_s"),
        (lambda r: r.acquire_lease("has space", 1.0), "name"),
        (lambda r: r.acquire_lease("ok", -1.0), "ttl_s"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_written(
    cp: ControlPlaneCoordinator,
    call: Callable[[InstanceRegistry], Awaitable[object]],
    field: str,
) -> None:
    registry = create_instance_registry(cp.store)
    with pytest.raises(ValidationError) as caught:
        await call(registry)
    assert caught.value.field == field
    assert await registry.list_live(TIMEOUT_S) == []


async def test_presence_registers_beats_and_deregisters(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, clock: Clock
) -> None:
    other = await cp_factory()
    clock.attach(other)
    watcher = create_instance_registry(cp.store)
    silent = create_instance_registry(other.store, instance_id="silent")
    await silent.register()
    counter = itertools.count(1)
    registry = create_instance_registry(cp.store, instance_id="me")
    async with InstancePresence(
        registry, interval_s=3600, timeout_s=7200, counters=lambda: {"beats": next(counter)}
    ) as presence:
        assert [i.instance_id for i in await watcher.list_live(TIMEOUT_S)] == ["me", "silent"]
        clock.advance(7201)
        marked = await presence.beat_once()
        assert [i.instance_id for i in marked] == ["silent"]
        live = await watcher.list_live(TIMEOUT_S)
        assert [(i.instance_id, i.counters) for i in live] == [("me", {"beats": 1})]
    assert await watcher.list_live(TIMEOUT_S) == []
    clock.advance(10_000)
    assert await watcher.mark_gone(TIMEOUT_S) == []
