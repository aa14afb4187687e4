"""Audit chains in the SQLite file of a ``SqliteStore``.

Tables (created on first use through ``SqliteStore.ensure_schema``):

``audit_events``
    one row per event, keyed by ``(workspace_id, seq)``; ``details`` is JSON text.
``audit_heads``
    one row per workspace: ``seq`` and ``hash`` of the last event appended.

An append is one ``store.transaction`` (``BEGIN IMMEDIATE``): it reads the head, chains
the new events on it and inserts them, so appends from any number of processes on the
same file serialise into one chain.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence

from aragora.audit.base import AuditIntegrityError, ChainHead, CorruptEvent, StoredEvent
from aragora.audit.events import AuditDraft, AuditEvent, canonical_json, chain_events
from aragora.store.sqlite import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    workspace_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    outcome TEXT NOT NULL,
    correlation_id TEXT,
    client_address TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_heads (
    workspace_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID
"""

_COLUMNS = (
    "seq, time_ms, workspace_id, principal, action, resource, outcome,"
    " correlation_id, client_address, details, prev_hash, hash"
)


class SqliteAuditStore:
    """``AuditStore`` on a ``SqliteStore``; shares its connection, worker thread and clock."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if not self._schema_ready:
                await self._store.ensure_schema(SCHEMA)
                self._schema_ready = True

    async def append(self, workspace_id: str, drafts: Sequence[AuditDraft]) -> list[AuditEvent]:
        if not drafts:
            return []
        await self._ensure_schema()

        def body(conn: sqlite3.Connection, now_s: float) -> list[AuditEvent]:
            head = _head(conn, workspace_id)
            top = conn.execute(
                "SELECT MAX(seq) FROM audit_events WHERE workspace_id = ?", (workspace_id,)
            ).fetchone()[0]
            if top is not None and top > head.seq:
                reason = f"events up to seq {top} exist but the head is at seq {head.seq}"
                raise AuditIntegrityError(workspace_id, reason)
            events = chain_events(
                drafts, head_seq=head.seq, head_hash=head.hash, time_ms=round(now_s * 1000)
            )
            conn.executemany(
                f"INSERT INTO audit_events ({_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                [
                    (
                        e.seq,
                        e.time_ms,
                        e.workspace_id,
                        e.principal,
                        e.action,
                        e.resource,
                        e.outcome,
                        e.correlation_id,
                        e.client_address,
                        canonical_json(e.details),
                        e.prev_hash,
                        e.hash,
                    )
                    for e in events
                ],
            )
            last = events[-1]
            conn.execute(
                "INSERT INTO audit_heads (workspace_id, seq, hash) VALUES (?, ?, ?)"
                " ON CONFLICT (workspace_id)"
                " DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (workspace_id, last.seq, last.hash),
            )
            return events

        return await self._store.transaction(body)

    async def head(self, workspace_id: str) -> ChainHead:
        await self._ensure_schema()
        return await self._store.snapshot(lambda conn, _now_s: _head(conn, workspace_id))

    async def read(
        self, workspace_id: str, *, after_seq: int, limit: int, max_seq: int | None = None
    ) -> list[StoredEvent]:
        await self._ensure_schema()
        upper = (1 << 63) - 1 if max_seq is None else max_seq

        def body(conn: sqlite3.Connection, _now_s: float) -> list[StoredEvent]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_events WHERE workspace_id = ?"
                " AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (workspace_id, after_seq, upper, limit),
            ).fetchall()
            return [_decode(row) for row in rows]

        return await self._store.snapshot(body)


def _head(conn: sqlite3.Connection, workspace_id: str) -> ChainHead:
    row = conn.execute(
        "SELECT seq, hash FROM audit_heads WHERE workspace_id = ?", (workspace_id,)
    ).fetchone()
    return ChainHead() if row is None else ChainHead(int(row[0]), str(row[1]))


def _decode(row: sqlite3.Row) -> StoredEvent:
    data = dict(zip(_COLUMNS.replace(" ", "").split(","), tuple(row), strict=True))
    seq = data["seq"] if type(data["seq"]) is int else -1
    try:
        data["details"] = json.loads(data["details"])
        return AuditEvent.from_dict(data)
    except (ValueError, TypeError) as exc:
        return CorruptEvent(seq, f"cannot decode the stored event: {exc}")
