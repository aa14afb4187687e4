"""Alert states in the embedded SQLite file, next to the control plane's own tables.

Table ``alert_states`` (created on first use; times are epoch seconds on the store
clock): one row per alert key with its kind, workspace, severity, summary, details
(JSON), status, fired/resolved times, ``observed_at`` of its last transition, whether
it is an event alert, and ``expires_at`` (set for event and resolved alerts; expired
rows are deleted by later transitions). Every transition is one ``BEGIN IMMEDIATE``
transaction of the store.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Final

from aragora.alerts.models import AlertRecord, AlertSeverity, AlertStatus, Condition
from aragora.alerts.state import AlertStateStore
from aragora.store.sqlite import SqliteStore

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS alert_states (
    alert_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    workspace_id TEXT,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    status TEXT NOT NULL,
    fired_at REAL NOT NULL,
    resolved_at REAL,
    observed_at REAL NOT NULL,
    one_shot INTEGER NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_states_firing
    ON alert_states (alert_key) WHERE status = 'firing' AND one_shot = 0;
CREATE INDEX IF NOT EXISTS alert_states_expiry
    ON alert_states (expires_at) WHERE expires_at IS NOT NULL;
"""

_COLUMNS: Final = (
    "alert_key, kind, workspace_id, severity, summary, details, status, fired_at,"
    " resolved_at, observed_at, one_shot, expires_at"
)
_PURGE_BATCH: Final = 100


def _record(row: sqlite3.Row) -> AlertRecord:
    return AlertRecord(
        key=row["alert_key"],
        kind=row["kind"],
        status=AlertStatus(row["status"]),
        severity=AlertSeverity(row["severity"]),
        summary=row["summary"],
        workspace_id=row["workspace_id"],
        details=json.loads(row["details"]),
        fired_at=row["fired_at"],
        resolved_at=row["resolved_at"],
        one_shot=bool(row["one_shot"]),
    )


def _current(conn: sqlite3.Connection, key: str, now: float) -> sqlite3.Row | None:
    """The alert's row unless it has expired (expired rows are purged, a batch at a time)."""
    conn.execute(
        "DELETE FROM alert_states WHERE alert_key IN (SELECT alert_key FROM alert_states"
        " WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
        (now, _PURGE_BATCH),
    )
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_COLUMNS} FROM alert_states WHERE alert_key = ?"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (key, now),
    ).fetchone()
    return row


class SqliteAlertStateStore(AlertStateStore):
    """Alert states in the same SQLite file, and transactions, as ``store``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._schema_ready = False

    async def _db(self) -> SqliteStore:
        if not self._schema_ready:
            await self._store.ensure_schema(SCHEMA)
            self._schema_ready = True
        return self._store

    async def fire(
        self, condition: Condition, *, observed_at: float, one_shot: bool, retention_s: float
    ) -> AlertRecord | None:
        def body(conn: sqlite3.Connection, now: float) -> AlertRecord | None:
            row = _current(conn, condition.key, now)
            if row is not None and (
                row["status"] == AlertStatus.FIRING.value or observed_at < row["observed_at"]
            ):
                return None
            conn.execute(
                f"INSERT OR REPLACE INTO alert_states ({_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, 'firing', ?, NULL, ?, ?, ?)",
                (
                    condition.key,
                    condition.kind,
                    condition.workspace_id,
                    condition.severity.value,
                    condition.summary,
                    json.dumps(condition.details, default=str),
                    now,
                    observed_at,
                    int(one_shot),
                    now + retention_s if one_shot else None,
                ),
            )
            return AlertRecord(
                key=condition.key,
                kind=condition.kind,
                status=AlertStatus.FIRING,
                severity=condition.severity,
                summary=condition.summary,
                workspace_id=condition.workspace_id,
                details=json.loads(json.dumps(condition.details, default=str)),
                fired_at=now,
                resolved_at=None,
                one_shot=one_shot,
            )

        return await (await self._db()).transaction(body)

    async def resolve(
        self, key: str, *, observed_at: float, retention_s: float
    ) -> AlertRecord | None:
        def body(conn: sqlite3.Connection, now: float) -> AlertRecord | None:
            row = _current(conn, key, now)
            if (
                row is None
                or row["status"] != AlertStatus.FIRING.value
                or row["one_shot"]
                or observed_at < row["observed_at"]
            ):
                return None
            conn.execute(
                "UPDATE alert_states SET status = 'resolved', resolved_at = ?,"
                " observed_at = ?, expires_at = ? WHERE alert_key = ?",
                (now, observed_at, now + retention_s, key),
            )
            updated = conn.execute(
                f"SELECT {_COLUMNS} FROM alert_states WHERE alert_key = ?", (key,)
            ).fetchone()
            return _record(updated)

        return await (await self._db()).transaction(body)

    async def list_firing(self) -> list[AlertRecord]:
        def body(conn: sqlite3.Connection, _now: float) -> list[AlertRecord]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM alert_states WHERE status = 'firing' AND one_shot = 0"
                " ORDER BY alert_key"
            ).fetchall()
            return [_record(r) for r in rows]

        return await (await self._db()).snapshot(body)

    async def get(self, key: str) -> AlertRecord | None:
        def body(conn: sqlite3.Connection, now: float) -> AlertRecord | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM alert_states WHERE alert_key = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            ).fetchone()
            return None if row is None else _record(row)

        return await (await self._db()).snapshot(body)
