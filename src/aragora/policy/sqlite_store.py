"""Policy rules, feature flags and rate limits on the embedded SQLite store.

Tables (created on first use through ``SqliteStore.ensure_schema``):

``policy_documents``
    one row per rule or flag: ``(workspace_id, kind, doc_id)`` -> JSON and write time
``policy_versions``
    ``(workspace_id, kind)`` -> counter bumped by every write of the collection
``rate_limits``
    ``(workspace_id, key)`` -> GCRA theoretical arrival time in us and the store-clock
    time after which the row no longer matters (later hits delete such rows)

Every write is one ``SqliteStore.transaction`` (``BEGIN IMMEDIATE``) using the ``now``
it is given, so it is atomic against every other process on the same file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

from aragora.policy.ratelimit import GcraStep, RateLimiter, gcra
from aragora.policy.store import Documents, Kind, PolicyStore
from aragora.store.sqlite import SqliteStore

_POLICY_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_documents (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (workspace_id, kind, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS policy_versions (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind)
) WITHOUT ROWID;
"""

_RATE_LIMIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_limits (
    workspace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    tat_us INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (workspace_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_limits_by_expiry ON rate_limits (expires_at);
"""

_EXPIRED_PER_HIT = 16
"""Expired rate-limit rows each hit deletes: bounded work, yet outpaces creation."""


class _Schema:
    """Creates an extension's tables once per store object, on first use."""

    def __init__(self, store: SqliteStore, ddl: str) -> None:
        self._store = store
        self._ddl = ddl
        self._done = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        if self._done:
            return
        async with self._lock:
            if not self._done:
                await self._store.ensure_schema(self._ddl)
                self._done = True


class SqlitePolicyStore(PolicyStore):
    """``PolicyStore`` on the connection and worker thread of ``store``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._schema = _Schema(store, _POLICY_SCHEMA)

    async def _read(self, workspace_id: str, kind: Kind) -> tuple[int, Documents]:
        def body(conn: sqlite3.Connection, _now: float) -> tuple[int, Documents]:
            rows = conn.execute(
                "SELECT doc_id, doc, updated_at FROM policy_documents"
                " WHERE workspace_id = ? AND kind = ?",
                (workspace_id, kind),
            ).fetchall()
            return _version(conn, workspace_id, kind), {
                row[0]: (json.loads(row[1]), row[2]) for row in rows
            }

        await self._schema.ensure()
        return await self._store.snapshot(body)

    async def _put(
        self, workspace_id: str, kind: Kind, doc_id: str, doc: str, max_docs: int
    ) -> int | None:
        def body(conn: sqlite3.Connection, now: float) -> int | None:
            key = (workspace_id, kind, doc_id)
            exists = conn.execute(
                "SELECT 1 FROM policy_documents WHERE workspace_id = ? AND kind = ? AND doc_id = ?",
                key,
            ).fetchone()
            if exists is None:
                (count,) = conn.execute(
                    "SELECT count(*) FROM policy_documents WHERE workspace_id = ? AND kind = ?",
                    (workspace_id, kind),
                ).fetchone()
                if count >= max_docs:
                    return None
            conn.execute(
                "INSERT INTO policy_documents (workspace_id, kind, doc_id, doc, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, kind, doc_id)"
                " DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                (*key, doc, now),
            )
            return _bump(conn, workspace_id, kind)

        await self._schema.ensure()
        return await self._store.transaction(body)

    async def _delete(self, workspace_id: str, kind: Kind, doc_id: str) -> int | None:
        def body(conn: sqlite3.Connection, _now: float) -> int | None:
            deleted = conn.execute(
                "DELETE FROM policy_documents WHERE workspace_id = ? AND kind = ? AND doc_id = ?",
                (workspace_id, kind, doc_id),
            ).rowcount
            return _bump(conn, workspace_id, kind) if deleted else None

        await self._schema.ensure()
        return await self._store.transaction(body)

    async def _version(self, workspace_id: str, kind: Kind) -> int:
        await self._schema.ensure()
        return await self._store.snapshot(lambda conn, _now: _version(conn, workspace_id, kind))


def _version(conn: sqlite3.Connection, workspace_id: str, kind: str) -> int:
    row = conn.execute(
        "SELECT version FROM policy_versions WHERE workspace_id = ? AND kind = ?",
        (workspace_id, kind),
    ).fetchone()
    return 0 if row is None else int(row[0])


def _bump(conn: sqlite3.Connection, workspace_id: str, kind: str) -> int:
    (version,) = conn.execute(
        "INSERT INTO policy_versions (workspace_id, kind, version) VALUES (?, ?, 1)"
        " ON CONFLICT (workspace_id, kind) DO UPDATE SET version = version + 1"
        " RETURNING version",
        (workspace_id, kind),
    ).fetchone()
    return int(version)


class SqliteRateLimiter(RateLimiter):
    """``RateLimiter`` as one transaction per hit, applying ``gcra`` at the store's ``now``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._schema = _Schema(store, _RATE_LIMIT_SCHEMA)

    async def _hit(
        self, workspace_id: str, key: str, limit: int, window_us: int, cost: int
    ) -> GcraStep:
        def body(conn: sqlite3.Connection, now: float) -> GcraStep:
            conn.execute(
                "DELETE FROM rate_limits WHERE (workspace_id, key) IN (SELECT workspace_id, key"
                " FROM rate_limits WHERE expires_at < ? ORDER BY expires_at LIMIT ?)",
                (now, _EXPIRED_PER_HIT),
            )
            row = conn.execute(
                "SELECT tat_us FROM rate_limits WHERE workspace_id = ? AND key = ?",
                (workspace_id, key),
            ).fetchone()
            now_us = round(now * 1_000_000)
            step = gcra(None if row is None else int(row[0]), now_us, limit, window_us, cost)
            if step.allowed and cost > 0:
                conn.execute(
                    "INSERT INTO rate_limits (workspace_id, key, tat_us, expires_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, key)"
                    " DO UPDATE SET tat_us = excluded.tat_us, expires_at = excluded.expires_at",
                    (workspace_id, key, step.new_tat_us, step.new_tat_us / 1_000_000),
                )
            return step

        await self._schema.ensure()
        return await self._store.transaction(body)
