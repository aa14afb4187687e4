"""Fixtures of the tenancy tests: a tenancy store and service on the ``cp`` coordinator's
store (SQLite and Redis), and a look at everything a store holds on disk or in Redis."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from aragora.control_plane import ControlPlaneCoordinator
from aragora.store.base import Store
from aragora.store.redis import RedisStore
from aragora.store.sqlite import SqliteStore
from aragora.tenancy.service import TenancyService
from aragora.tenancy.store import TenancyStore, create_tenancy_store

SECRET_KEY = bytes(range(32))
"""The server secret of the tests: fixed, so every coordinator of a test shares it."""


@pytest.fixture
def tenancy(cp: ControlPlaneCoordinator) -> TenancyStore:
    return create_tenancy_store(cp.store)


@pytest.fixture
def service(tenancy: TenancyStore) -> TenancyService:
    return TenancyService(tenancy, SECRET_KEY)


async def everything_stored(store: Store) -> str:
    """Every key and value of the store's Redis key prefix, or the raw bytes of the
    SQLite database with its WAL and shared-memory files plus every row of every table,
    as one string to search."""
    if isinstance(store, RedisStore):
        return await _redis_dump(store)
    assert isinstance(store, SqliteStore)
    return await _sqlite_dump(store)


async def _redis_dump(store: RedisStore) -> str:
    client: Any = store.client  # raw commands; their stubs differ between redis-py releases
    parts: list[str] = []
    async for key in client.scan_iter(match=store.config.key_prefix + "*", count=1000):
        kind = str(await client.type(key))
        value: Any
        if kind == "hash":
            value = await client.hgetall(key)
        elif kind == "set":
            value = await client.smembers(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "string":
            value = await client.get(key)
        else:
            value = f"<{kind}>"
        parts.append(f"{key} {value!r}")
    return "\n".join(parts)


async def _sqlite_dump(store: SqliteStore) -> str:
    def rows(conn: sqlite3.Connection, _now: float) -> list[str]:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [repr(tuple(row)) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"')]

    def files() -> list[str]:
        paths = [Path(store.path + suffix) for suffix in ("", "-wal", "-shm")]
        return [p.read_bytes().decode("latin-1") for p in paths if p.exists()]

    return "\n".join([*await store.snapshot(rows), *await asyncio.to_thread(files)])
