"""Tenancy in the embedded SQLite file, next to the control plane's own tables.

Tables (created on first use through ``SqliteStore.ensure_schema``; times are epoch
seconds on the store clock):

``tenancy_workspaces``
    one row per workspace: plan and quota overrides (a JSON object).
``tenancy_tokens``
    one row per token: workspace, role, times, creator and the keyed hash of its
    secret (unique: authentication looks tokens up by it).
``tenancy_agent_owners``
    agent id (per workspace) -> owning token id.

Every write is one ``BEGIN IMMEDIATE`` transaction of the store, so a check and the
write that depends on it cannot interleave with another process's.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
from collections.abc import Sequence
from typing import Final

from aragora.store.sqlite import SqliteStore
from aragora.tenancy.errors import (
    TokenExistsError,
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
)
from aragora.tenancy.models import Role, TokenInfo, Workspace
from aragora.tenancy.quotas import build_workspace
from aragora.tenancy.store import TenancyStore

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tenancy_workspaces (
    name TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    quota_overrides TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tenancy_tokens (
    token_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    created_by TEXT
);
CREATE INDEX IF NOT EXISTS tenancy_tokens_by_workspace
    ON tenancy_tokens (workspace_id, created_at);

CREATE TABLE IF NOT EXISTS tenancy_agent_owners (
    workspace_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (workspace_id, agent_id)
) WITHOUT ROWID;
"""

_TOKEN_COLUMNS: Final = (
    "token_id, token_hash, workspace_id, role, created_at, expires_at, revoked_at, created_by"
)


def _workspace(row: sqlite3.Row) -> Workspace:
    overrides: dict[str, int | None] = json.loads(row["quota_overrides"])
    return build_workspace(row["name"], row["plan"], overrides, row["created_at"])


def _workspace_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT name, plan, quota_overrides, created_at FROM tenancy_workspaces WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise WorkspaceNotFoundError(name)
    return row


def _token(row: sqlite3.Row) -> TokenInfo:
    return TokenInfo(
        token_id=row["token_id"],
        workspace_id=row["workspace_id"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        created_by=row["created_by"],
    )


def _token_row(conn: sqlite3.Connection, token_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM tenancy_tokens WHERE token_id = ?", (token_id,)
    ).fetchone()
    return row


def _overrides_json(overrides: dict[str, int | None]) -> str:
    return json.dumps(overrides, sort_keys=True, separators=(",", ":"))


class SqliteTenancyStore(TenancyStore):
    """Tenancy tables in the same SQLite file, and the same transactions, as ``store``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._schema_ready = False

    async def _db(self) -> SqliteStore:
        """The store, with the tenancy tables created on first use."""
        if not self._schema_ready:
            await self._store.ensure_schema(SCHEMA)
            self._schema_ready = True
        return self._store

    async def now(self) -> float:
        return await self._store.now()

    # -- workspaces ------------------------------------------------------------------
    async def _create_workspace(
        self, name: str, plan: str, overrides: dict[str, int | None]
    ) -> Workspace:
        def body(conn: sqlite3.Connection, now: float) -> Workspace:
            taken = conn.execute("SELECT 1 FROM tenancy_workspaces WHERE name = ?", (name,))
            if taken.fetchone() is not None:
                raise WorkspaceExistsError(name)
            conn.execute(
                "INSERT INTO tenancy_workspaces (name, plan, quota_overrides, created_at)"
                " VALUES (?, ?, ?, ?)",
                (name, plan, _overrides_json(overrides), now),
            )
            return build_workspace(name, plan, overrides, now)

        return await (await self._db()).transaction(body)

    async def _get_workspace(self, name: str) -> Workspace:
        db = await self._db()
        return await db.snapshot(lambda conn, _now: _workspace(_workspace_row(conn, name)))

    async def _list_workspaces(self) -> Sequence[Workspace]:
        def body(conn: sqlite3.Connection, _now: float) -> list[Workspace]:
            rows = conn.execute(
                "SELECT name, plan, quota_overrides, created_at FROM tenancy_workspaces"
                " ORDER BY name"
            ).fetchall()
            return [_workspace(row) for row in rows]

        return await (await self._db()).snapshot(body)

    async def _update_quotas(
        self, name: str, overrides: dict[str, int | None], plan: str | None, replace: bool
    ) -> Workspace:
        def body(conn: sqlite3.Connection, _now: float) -> Workspace:
            row = _workspace_row(conn, name)
            merged: dict[str, int | None] = {} if replace else json.loads(row["quota_overrides"])
            merged.update(overrides)
            new_plan = plan or row["plan"]
            conn.execute(
                "UPDATE tenancy_workspaces SET plan = ?, quota_overrides = ? WHERE name = ?",
                (new_plan, _overrides_json(merged), name),
            )
            return build_workspace(name, new_plan, merged, row["created_at"])

        return await (await self._db()).transaction(body)

    # -- tokens ----------------------------------------------------------------------
    async def _create_token(
        self,
        workspace: str,
        role: Role,
        token_hash: str,
        token_id: str,
        expires_at: float | None,
        created_by: str | None,
        *,
        upsert: bool,
    ) -> TokenInfo:
        def body(conn: sqlite3.Connection, now: float) -> TokenInfo:
            _workspace_row(conn, workspace)
            holder = conn.execute(
                "SELECT token_id FROM tenancy_tokens WHERE token_hash = ?", (token_hash,)
            ).fetchone()
            existing = _token_row(conn, token_id)
            if (
                upsert
                and existing is not None
                and existing["workspace_id"] == workspace
                and existing["token_hash"] == token_hash
            ):
                return _token(existing)
            if holder is not None or (
                existing is not None and (not upsert or existing["workspace_id"] != workspace)
            ):
                raise TokenExistsError(token_id)
            if existing is not None:
                conn.execute("DELETE FROM tenancy_tokens WHERE token_id = ?", (token_id,))
            conn.execute(
                f"INSERT INTO tenancy_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (token_id, token_hash, workspace, role.value, now, expires_at, created_by),
            )
            return TokenInfo(token_id, workspace, role, now, expires_at, None, created_by)

        return await (await self._db()).transaction(body)

    async def _lookup_token(self, token_hash: str) -> TokenInfo | None:
        def body(conn: sqlite3.Connection, _now: float) -> TokenInfo | None:
            row: sqlite3.Row | None = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tenancy_tokens WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            if row is None or not hmac.compare_digest(row["token_hash"], token_hash):
                return None
            return _token(row)

        return await (await self._db()).snapshot(body)

    async def _get_token(self, token_id: str) -> TokenInfo:
        def body(conn: sqlite3.Connection, _now: float) -> TokenInfo:
            row = _token_row(conn, token_id)
            if row is None:
                raise TokenNotFoundError(token_id)
            return _token(row)

        return await (await self._db()).snapshot(body)

    async def _list_tokens(self, workspace: str | None) -> Sequence[TokenInfo]:
        def body(conn: sqlite3.Connection, _now: float) -> list[TokenInfo]:
            if workspace is None:
                rows = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tenancy_tokens").fetchall()
            else:
                _workspace_row(conn, workspace)
                rows = conn.execute(
                    f"SELECT {_TOKEN_COLUMNS} FROM tenancy_tokens WHERE workspace_id = ?",
                    (workspace,),
                ).fetchall()
            return [_token(row) for row in rows]

        return await (await self._db()).snapshot(body)

    async def _revoke_token(self, token_id: str) -> TokenInfo:
        def body(conn: sqlite3.Connection, now: float) -> TokenInfo:
            conn.execute(
                "UPDATE tenancy_tokens SET revoked_at = ?"
                " WHERE token_id = ? AND revoked_at IS NULL",
                (now, token_id),
            )
            row = _token_row(conn, token_id)
            if row is None:
                raise TokenNotFoundError(token_id)
            return _token(row)

        return await (await self._db()).transaction(body)

    # -- agent owners ----------------------------------------------------------------
    async def _claim_agent_owner(self, workspace: str, agent_id: str, token_id: str) -> bool:
        def body(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute(
                "SELECT token_id FROM tenancy_agent_owners WHERE workspace_id = ? AND agent_id = ?",
                (workspace, agent_id),
            ).fetchone()
            if row is not None:
                owner: str = row[0]
                if owner == token_id:
                    return True
                holder = _token_row(conn, owner)
                if holder is not None and _token(holder).is_active(now):
                    return False
            conn.execute(
                "INSERT INTO tenancy_agent_owners (workspace_id, agent_id, token_id, claimed_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, agent_id)"
                " DO UPDATE SET token_id = excluded.token_id, claimed_at = excluded.claimed_at",
                (workspace, agent_id, token_id, now),
            )
            return True

        return await (await self._db()).transaction(body)

    async def _agent_owner(self, workspace: str, agent_id: str) -> str | None:
        def body(conn: sqlite3.Connection, _now: float) -> str | None:
            row = conn.execute(
                "SELECT token_id FROM tenancy_agent_owners WHERE workspace_id = ? AND agent_id = ?",
                (workspace, agent_id),
            ).fetchone()
            return None if row is None else str(row[0])

        return await (await self._db()).snapshot(body)

    async def _release_agent_owner(self, workspace: str, agent_id: str) -> None:
        def body(conn: sqlite3.Connection, _now: float) -> None:
            conn.execute(
                "DELETE FROM tenancy_agent_owners WHERE workspace_id = ? AND agent_id = ?",
                (workspace, agent_id),
            )

        await (await self._db()).transaction(body)
