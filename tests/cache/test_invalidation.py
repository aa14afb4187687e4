"""Cached hot reads across instances: a write on one server instance takes effect on
another within a second (pub/sub), even with a cache TTL of a minute; a missed message
lasts at most the TTL; losing the subscription drops everything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from aragora.cache import (
    InvalidationBus,
    LocalInvalidationBus,
    RedisInvalidationBus,
    TTLCache,
    create_invalidation_bus,
)
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.server.services import close_services
from aragora.server.state import server_state
from aragora.store import create_store
from aragora.store.redis import RedisStore
from aragora.tenancy.errors import AuthenticationError
from aragora.tenancy.models import Role
from aragora.tenancy.service import TenancyService
from aragora.tenancy.store import create_tenancy_store
from tests.conftest import CoordinatorFactory
from tests.server.conftest import API, SECRET_KEY, bearer, http_client, issue, started_app

PROMPTLY_S = 1.0
"""How soon a write on one instance must govern the others."""
LONG_TTL_S = 60.0
"""A TTL far beyond ``PROMPTLY_S``: only an invalidation message explains a prompt effect."""

on_redis = pytest.mark.parametrize("store_kind", ["redis", "cluster"], indirect=True)


def _bus(app: FastAPI) -> InvalidationBus:
    services = server_state(app).services
    assert services is not None
    return services.invalidation


def _arrival(bus: InvalidationBus, namespace: str) -> asyncio.Event:
    """Set when an invalidation of ``namespace`` reaches ``bus`` (after the caches'
    own handlers, which subscribed first)."""
    arrived = asyncio.Event()
    bus.subscribe(namespace, lambda _key: arrived.set())
    return arrived


@pytest.fixture
async def two_servers(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI]]:
    """Admin clients of two server instances on one store, caching for a minute; and
    the second instance's app."""
    first = await cp_factory(cache_ttl_s=LONG_TTL_S)
    second = await cp_factory(cache_ttl_s=LONG_TTL_S)
    app_a, app_b = await started_app(first), await started_app(second)
    try:
        async with http_client(app_a) as a, http_client(app_b) as b:
            yield a, b, app_b
    finally:
        await close_services(app_a)
        await close_services(app_b)


@on_redis
async def test_a_token_revoked_on_one_instance_is_refused_on_another_within_a_second(
    two_servers: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI],
) -> None:
    a, b, app_b = two_servers
    issued = await a.post(f"{API}/tokens", json={"role": "submitter"})
    assert issued.status_code == 201, issued.text
    token, token_id = issued.json()["token"], issued.json()["token_id"]
    assert (await b.get(f"{API}/tasks", headers=bearer(token))).status_code == 200
    assert (await b.get(f"{API}/tasks", headers=bearer(token))).status_code == 200  # cached
    arrived = _arrival(_bus(app_b), "token")

    started = time.monotonic()
    assert (await a.delete(f"{API}/tokens/{token_id}")).status_code == 204
    assert (await a.get(f"{API}/tasks", headers=bearer(token))).status_code == 401
    await asyncio.wait_for(arrived.wait(), PROMPTLY_S)
    refused = await b.get(f"{API}/tasks", headers=bearer(token))

    assert refused.status_code == 401
    assert time.monotonic() - started < PROMPTLY_S


@on_redis
async def test_a_quota_changed_on_one_instance_applies_on_another_within_a_second(
    two_servers: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI],
) -> None:
    a, b, app_b = two_servers
    assert (await a.post(f"{API}/workspaces", json={"name": "quota-ws"})).status_code == 201
    issued = await a.post(f"{API}/tokens", json={"role": "submitter", "workspace": "quota-ws"})
    submitter = bearer(issued.json()["token"])
    body = {"task_type": "t", "payload": 1}
    accepted = await b.post(f"{API}/tasks/submit", json=body, headers=submitter)
    assert accepted.status_code in (200, 201), accepted.text  # quotas now cached on b
    arrived = _arrival(_bus(app_b), "workspace")

    patched = await a.patch(
        f"{API}/workspaces/quota-ws", json={"quotas": {"max_submits_per_minute": 0}}
    )
    assert patched.status_code == 200, patched.text
    await asyncio.wait_for(arrived.wait(), PROMPTLY_S)
    refused = await b.post(f"{API}/tasks/submit", json=body, headers=submitter)

    assert refused.status_code == 403, refused.text


@on_redis
async def test_a_rule_written_on_one_instance_governs_another_within_a_second(
    two_servers: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI],
) -> None:
    a, b, app_b = two_servers
    body = {"task_type": "t", "payload": 1}
    assert (await b.post(f"{API}/tasks/submit", json=body)).status_code in (200, 201)
    arrived = _arrival(_bus(app_b), "rules")

    rule = 'forbid(principal, action == Action::"task.submit", resource);'
    assert (await a.put(f"{API}/policies/no-submit", json={"text": rule})).status_code == 200
    await asyncio.wait_for(arrived.wait(), PROMPTLY_S)
    refused = await b.post(f"{API}/tasks/submit", json=body)

    assert refused.status_code == 403, refused.text
    assert refused.json()["rule_ids"] == ["no-submit"]


# The subscription is killed through a single-server client, so not on the cluster.
@pytest.mark.parametrize("store_kind", ["redis"], indirect=True)
async def test_losing_the_subscription_drops_every_cached_entry(
    cp: ControlPlaneCoordinator,
) -> None:
    assert isinstance(cp.store, RedisStore)
    cache: TTLCache[str] = TTLCache(LONG_TTL_S)
    async with RedisInvalidationBus(cp.store) as bus:
        bus.subscribe("thing", lambda key: cache.clear() if key is None else cache.invalidate(key))
        cache.put("a", "cached", generation=cache.generation)
        subscriptions = bus.subscriptions

        killer = aioredis.Redis.from_url(cp.config.effective_store_url)
        async with killer:
            await killer.client_kill_filter(_type="pubsub")
        assert await bus.wait_subscribed(subscriptions, timeout_s=5.0)

        assert cache.get("a") is None


@on_redis
async def test_publish_reaches_every_bus_and_drops_the_entry_at_once_locally(
    cp: ControlPlaneCoordinator,
) -> None:
    assert isinstance(cp.store, RedisStore)
    here: TTLCache[str] = TTLCache(LONG_TTL_S)
    there: TTLCache[str] = TTLCache(LONG_TTL_S)
    async with RedisInvalidationBus(cp.store) as bus_here, RedisInvalidationBus(cp.store) as bus:
        bus_here.subscribe("thing", lambda key: here.invalidate(key or ""))
        bus.subscribe("thing", lambda key: there.invalidate(key or ""))
        arrived = _arrival(bus, "thing")
        for cache in (here, there):
            cache.put("k:1", "v", generation=cache.generation)
            cache.put("k:2", "v", generation=cache.generation)

        await bus_here.publish("thing", "k:1")
        assert here.get("k:1") is None  # before any message went round
        await asyncio.wait_for(arrived.wait(), PROMPTLY_S)

        assert (there.get("k:1"), there.get("k:2")) == (None, "v")


async def test_on_sqlite_another_process_sees_a_revocation_once_the_ttl_ran_out(
    tmp_path: Path,
) -> None:
    """Two services on one SQLite file with buses of their own (as two processes): the
    other one keeps the principal until the TTL runs out, and not a moment longer."""
    ticks = [0.0]
    config = ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'cp.db'}")
    async with (
        ControlPlaneCoordinator(config, run_reaper=False) as one,
        ControlPlaneCoordinator(config, run_reaper=False) as other,
    ):
        assert isinstance(create_invalidation_bus(one.store), LocalInvalidationBus)
        services = []
        for cp in (one, other):
            service = TenancyService(create_tenancy_store(cp.store), SECRET_KEY)
            service.enable_cache(LocalInvalidationBus(), 2.0, monotonic=lambda: ticks[0])
            services.append(service)
        writer, reader = services
        await writer.create_workspace("default")
        info, secret = await writer.issue_token("default", Role.SUBMITTER)
        assert (await reader.authenticate(secret)).token_id == info.token_id

        await writer.revoke(info.token_id)
        with pytest.raises(AuthenticationError):
            await writer.authenticate(secret)  # at once where it was revoked
        ticks[0] += 1.99
        assert (await reader.authenticate(secret)).token_id == info.token_id
        ticks[0] += 0.01
        with pytest.raises(AuthenticationError):
            await reader.authenticate(secret)


async def test_an_unreachable_store_never_fails_a_publish() -> None:
    """The write stands; other instances drop the entry when its TTL runs out."""
    store = create_store(ControlPlaneConfig(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(store, RedisStore)
    bus = RedisInvalidationBus(store)
    dropped: list[str | None] = []
    bus.subscribe("thing", dropped.append)

    await bus.publish("thing", "k")

    assert dropped == ["k"]


@on_redis
async def test_an_agent_taken_over_on_one_instance_refuses_its_old_token_on_another(
    two_servers: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI],
) -> None:
    a, b, app_b = two_servers
    old = bearer(await issue(a, "agent"))
    new = bearer(await issue(a, "agent"))
    beat = f"{API}/agents/worker-1/heartbeat"
    body = {"agent_id": "worker-1", "capabilities": ["debate"], "model": "m-1"}
    assert (await a.post(f"{API}/agents/register", json=body, headers=old)).status_code == 201
    assert (await b.post(beat, headers=old)).status_code == 200  # b caches the owner
    arrived = _arrival(_bus(app_b), "agent_owner")

    assert (await a.delete(f"{API}/agents/worker-1", headers=old)).status_code == 204
    assert (await a.post(f"{API}/agents/register", json=body, headers=new)).status_code == 201
    await asyncio.wait_for(arrived.wait(), PROMPTLY_S)

    assert (await b.post(beat, headers=old)).status_code == 403
    assert (await b.post(beat, headers=new)).status_code == 200
