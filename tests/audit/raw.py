"""Direct edits of stored audit events, bypassing aragora: raw Redis commands on a client
of its own, raw SQL on the SQLite file through the sqlite3 module.

They stand for someone with write access to the store who tampers with the trail.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import redis.asyncio as aioredis

from aragora.control_plane import ControlPlaneCoordinator
from aragora.store.sqlite import SqliteStore

Entry = tuple[str, dict[str, str]]


def is_sqlite(cp: ControlPlaneCoordinator) -> bool:
    return isinstance(cp.store, SqliteStore)


def events_key(cp: ControlPlaneCoordinator, workspace_id: str) -> str:
    return f"{cp.config.key_prefix}{{{workspace_id}}}:audit:events"


def head_key(cp: ControlPlaneCoordinator, workspace_id: str) -> str:
    return f"{cp.config.key_prefix}{{{workspace_id}}}:audit:head"


@contextlib.asynccontextmanager
async def raw_redis(cp: ControlPlaneCoordinator) -> AsyncIterator[Any]:
    """A client of its own on the deployment's Redis. Typed ``Any``: redis-py's stubs
    for raw commands differ between releases, and tests poke at raw values."""
    client = aioredis.Redis.from_url(cp.config.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def sql(cp: ControlPlaneCoordinator, statement: str, *params: Any) -> None:
    assert isinstance(cp.store, SqliteStore)
    with contextlib.closing(sqlite3.connect(cp.store.path)) as conn:
        conn.execute(statement, params)
        conn.commit()


async def rewrite_stream(
    cp: ControlPlaneCoordinator, workspace_id: str, edit: Callable[[list[Entry]], list[Entry]]
) -> None:
    """Replace the Redis stream of events by ``edit(entries)`` (a stream cannot be edited
    in place, so this is what tampering with one looks like)."""
    key = events_key(cp, workspace_id)
    async with raw_redis(cp) as client:
        stored: list[Entry] = cast(list[Entry], await client.xrange(key))
        edited = edit([(entry_id, dict(fields)) for entry_id, fields in stored])
        await client.delete(key)
        for entry_id, fields in edited:
            await client.xadd(key, cast(dict[Any, Any], fields), id=entry_id)


async def set_column(
    cp: ControlPlaneCoordinator, workspace_id: str, seq: int, column: str, value: Any
) -> None:
    """Overwrite one stored field of one event (``body`` fields by name on Redis)."""
    if is_sqlite(cp):
        sql(
            cp,
            f"UPDATE audit_events SET {column} = ? WHERE workspace_id = ? AND seq = ?",
            value,
            workspace_id,
            seq,
        )
        return

    def edit(entries: list[Entry]) -> list[Entry]:
        for entry_id, fields in entries:
            if entry_id == f"{seq}-0":
                if column in ("prev_hash", "hash"):
                    fields["prev" if column == "prev_hash" else "hash"] = value
                else:
                    body = json.loads(fields["body"])
                    body[column] = value
                    fields["body"] = json.dumps(body)
        return entries

    await rewrite_stream(cp, workspace_id, edit)


async def set_raw_body(cp: ControlPlaneCoordinator, workspace_id: str, seq: int, text: str) -> None:
    """Make one stored event undecodable."""
    if is_sqlite(cp):
        sql(
            cp,
            "UPDATE audit_events SET details = ? WHERE workspace_id = ? AND seq = ?",
            text,
            workspace_id,
            seq,
        )
        return

    def edit(entries: list[Entry]) -> list[Entry]:
        for entry_id, fields in entries:
            if entry_id == f"{seq}-0":
                fields["body"] = text
        return entries

    await rewrite_stream(cp, workspace_id, edit)


async def delete_event(cp: ControlPlaneCoordinator, workspace_id: str, seq: int) -> None:
    if is_sqlite(cp):
        sql(cp, "DELETE FROM audit_events WHERE workspace_id = ? AND seq = ?", workspace_id, seq)
        return
    async with raw_redis(cp) as client:
        assert await client.xdel(events_key(cp, workspace_id), f"{seq}-0") == 1


async def swap_events(cp: ControlPlaneCoordinator, workspace_id: str, a: int, b: int) -> None:
    """Exchange the stored content of two positions (a reordering)."""
    if is_sqlite(cp):
        sql(
            cp,
            "UPDATE audit_events SET seq = -1 WHERE workspace_id = ? AND seq = ?",
            workspace_id,
            a,
        )
        sql(
            cp,
            "UPDATE audit_events SET seq = ? WHERE workspace_id = ? AND seq = ?",
            a,
            workspace_id,
            b,
        )
        sql(
            cp,
            "UPDATE audit_events SET seq = ? WHERE workspace_id = ? AND seq = -1",
            b,
            workspace_id,
        )
        return

    def edit(entries: list[Entry]) -> list[Entry]:
        by_id = dict(entries)
        first, second = by_id[f"{a}-0"], by_id[f"{b}-0"]
        return [(i, second if i == f"{a}-0" else first if i == f"{b}-0" else f) for i, f in entries]

    await rewrite_stream(cp, workspace_id, edit)


async def delete_head(cp: ControlPlaneCoordinator, workspace_id: str) -> None:
    if is_sqlite(cp):
        sql(cp, "DELETE FROM audit_heads WHERE workspace_id = ?", workspace_id)
        return
    async with raw_redis(cp) as client:
        assert await client.delete(head_key(cp, workspace_id)) == 1


async def copy_chain(cp: ControlPlaneCoordinator, source: str, target: str) -> None:
    """Copy a workspace's whole chain, head included, into another workspace."""
    if is_sqlite(cp):
        columns = (
            "seq, time_ms, principal, action, resource, outcome, correlation_id,"
            " client_address, details, prev_hash, hash"
        )
        sql(
            cp,
            f"INSERT INTO audit_events (workspace_id, {columns})"
            f" SELECT ?, {columns} FROM audit_events WHERE workspace_id = ?",
            target,
            source,
        )
        sql(
            cp,
            "INSERT INTO audit_heads (workspace_id, seq, hash)"
            " SELECT ?, seq, hash FROM audit_heads WHERE workspace_id = ?",
            target,
            source,
        )
        return
    async with raw_redis(cp) as client:
        assert await client.copy(events_key(cp, source), events_key(cp, target), replace=True)
        assert await client.copy(head_key(cp, source), head_key(cp, target), replace=True)
