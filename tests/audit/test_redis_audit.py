"""Redis only: the compare-and-append script and where the chain's keys live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aragora.audit import GENESIS_HASH, AuditIntegrityError, AuditLog
from aragora.audit.redis_store import RedisAuditStore, _load_append_script
from aragora.control_plane import ControlPlaneCoordinator
from aragora.store.redis import RedisStore
from tests.audit import raw
from tests.audit.conftest import append_many
from tests.conftest import _delete_prefix, make_config


@pytest.fixture
async def redis_cp(redis_url: str, tmp_path: Path) -> AsyncIterator[ControlPlaneCoordinator]:
    config = make_config("redis", redis_url, tmp_path)
    async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
        yield cp
    _delete_prefix(redis_url, config.key_prefix)


async def test_append_with_a_stale_head_writes_nothing_and_returns_the_current_head(
    redis_cp: ControlPlaneCoordinator,
) -> None:
    log = AuditLog.for_store(redis_cp.store)
    events = await append_many(log, 3)
    head_key, events_key = raw.head_key(redis_cp, "default"), raw.events_key(redis_cp, "default")
    async with raw.raw_redis(redis_cp) as client:
        reply = await client.eval(
            _load_append_script(), 2, head_key, events_key, 2, events[1].hash, 1, "f" * 64, "{}"
        )
        assert reply[:3] == [0, "3", events[2].hash]
        assert int(reply[3]) > 0 and 0 <= int(reply[4]) < 1_000_000
        assert await client.xlen(events_key) == 3
        assert await client.hgetall(head_key) == {"seq": "3", "hash": events[2].hash}
    assert (await log.verify("default")).ok


async def test_an_empty_chain_is_appended_to_from_the_genesis_head(
    redis_cp: ControlPlaneCoordinator,
) -> None:
    head_key, events_key = raw.head_key(redis_cp, "ws"), raw.events_key(redis_cp, "ws")
    async with raw.raw_redis(redis_cp) as client:
        reply = await client.eval(
            _load_append_script(), 2, head_key, events_key, 0, GENESIS_HASH, 1, "a" * 64, "{}"
        )
        assert reply == [1]
        assert await client.hgetall(head_key) == {"seq": "1", "hash": "a" * 64}
        assert await client.xrange(events_key) == [
            ("1-0", {"body": "{}", "prev": GENESIS_HASH, "hash": "a" * 64})
        ]


async def test_audit_keys_live_in_the_workspace_hash_slot(
    redis_cp: ControlPlaneCoordinator,
) -> None:
    await append_many(AuditLog.for_store(redis_cp.store), 2, "alpha")
    assert isinstance(redis_cp.store, RedisStore)
    store = RedisAuditStore(redis_cp.store)
    prefix = redis_cp.config.key_prefix
    assert store.events_key("alpha") == prefix + "{alpha}:audit:events"
    assert store.head_key("alpha") == prefix + "{alpha}:audit:head"
    keys = [k async for k in redis_cp.store.iterate_keys()]
    assert sorted(k for k in keys if ":audit:" in k) == [
        store.events_key("alpha"),
        store.head_key("alpha"),
    ]


async def test_a_malformed_head_stops_appends_and_fails_verification(
    redis_cp: ControlPlaneCoordinator,
) -> None:
    log = AuditLog.for_store(redis_cp.store)
    await append_many(log, 2)
    async with raw.raw_redis(redis_cp) as client:
        await client.hset(raw.head_key(redis_cp, "default"), "seq", "two")
    with pytest.raises(AuditIntegrityError, match="malformed"):
        await append_many(log, 1)
    result = await log.verify("default")
    assert (result.ok, result.first_broken_seq) == (False, None)
    assert result.reason is not None and "malformed" in result.reason
