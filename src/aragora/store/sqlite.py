"""The embedded store: the control plane in one SQLite file.

Every transition is one SQL transaction opened with ``BEGIN IMMEDIATE``, so its
reads and writes are atomic with respect to every other process that opens the same
file (WAL mode lets readers go on meanwhile). All SQLite work runs on one worker
thread that owns the connection; the event loop only awaits it.

Schema (one row per object, JSON text for payloads, results, metadata and errors):

``workspaces``
    every workspace that ever held an agent or a task, with the counter that gives
    each submitted task its ``seq`` (FIFO order within a priority, kept on retry).
``tasks``
    every task. Partial indexes give each place its own ordered index: *ready*
    (pending, no ``available_at``) by ``(workspace, capset, priority rank, seq)``;
    *delayed* (pending, ``available_at`` set) by ``(workspace, available_at)``;
    *running* by agent and by ``lease_expires_at``; *terminal* by ``finished_at``.
    ``capset`` is the sorted, comma-joined required capabilities (names hold no
    commas). The idempotency key is a unique partial index, so the key goes when
    the task row goes.
``ready_queues``
    the capability sets of a workspace that may have ready tasks. A row is added
    whenever a task becomes ready and removed by a claim that finds its queue empty.
``agents``, ``breakers``, ``cancel_notices``
    registered agents; one circuit-breaker record per agent (kept when the agent
    deregisters, so re-registering does not reset it); ids of tasks cancelled while
    running, kept until the agent's next heartbeat.

A claim never scans tasks or agents: it promotes at most ``_CLAIM_PROMOTE_LIMIT``
due delayed tasks, then reads the head of each ready queue whose capability set is a
subset of the agent's (one index seek each) and takes the best by (rank, seq).

Notifications: transitions committed here wake the local ``NotificationHub`` once
they are committed. Commits by other processes (or other store objects on the same
file) arrive as datagrams (:mod:`aragora.store.wakeup`: each store object listens on a
socket registered next to the file, and a commit that made work claimable or a task
terminal rings the others). As a fallback for lost datagrams, and the only way where
such sockets do not exist, ``PRAGMA data_version`` of the store's own connection is
polled while anyone waits (every ``FALLBACK_POLL_INTERVAL_S``, else every 20 ms); that
value changes only when *another* connection commits, so a store is not woken by its
own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import (
    AgentNotFoundError,
    BudgetExceededError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    Alert,
    AttemptError,
    BreakerInfo,
    BreakerState,
    BudgetPeriod,
    HeartbeatResult,
    ReapReport,
    SpendReport,
    Task,
    TaskCounts,
    TaskPriority,
    TaskStatus,
    WorkspaceLimits,
)
from aragora.store.base import ClaimOutcome, NewTask, Store, TaskPage
from aragora.store.notify import NotificationHub, Watch, ready_channel, task_channel
from aragora.store.rules import (
    BreakerRecord,
    agent_status,
    breaker_admit,
    breaker_peek,
    breaker_record,
    breaker_release,
    budget_period_key,
    retry_delay_s,
)
from aragora.store.wakeup import LocalWakeup

_T = TypeVar("_T")

_SCHEMA_VERSION = 1
_POLL_INTERVAL_S = 0.02
FALLBACK_POLL_INTERVAL_S = 0.25
"""The poll's interval while cross-process wake-ups (``store.wakeup``) work: it only
catches a wake-up that got lost."""
_CLAIM_PROMOTE_LIMIT = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    workspace_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tasks (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    task_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    status TEXT NOT NULL,
    capset TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    attempts_allowed INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    created_at REAL NOT NULL,
    lease_token TEXT,
    agent_id TEXT,
    result TEXT,
    error TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    started_at REAL,
    finished_at REAL,
    lease_expires_at REAL,
    available_at REAL,
    idempotency_key TEXT,
    metadata TEXT NOT NULL,
    cost REAL,
    cost_estimate REAL,
    reserved REAL NOT NULL DEFAULT 0,
    budget_period TEXT,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_seq ON tasks (workspace_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (workspace_id, status, seq);
CREATE INDEX IF NOT EXISTS tasks_by_type ON tasks (workspace_id, task_type, seq);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_idempotency_key
    ON tasks (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_ready
    ON tasks (workspace_id, capset, priority_rank, seq)
    WHERE status = 'pending' AND available_at IS NULL;
CREATE INDEX IF NOT EXISTS tasks_delayed
    ON tasks (workspace_id, available_at)
    WHERE status = 'pending' AND available_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_running_by_agent
    ON tasks (workspace_id, agent_id) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS tasks_running_by_lease
    ON tasks (workspace_id, lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS tasks_finished
    ON tasks (workspace_id, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS ready_queues (
    workspace_id TEXT NOT NULL,
    capset TEXT NOT NULL,
    PRIMARY KEY (workspace_id, capset)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS agents (
    workspace_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    model TEXT NOT NULL,
    max_concurrent_tasks INTEGER NOT NULL,
    registered_at REAL NOT NULL,
    last_heartbeat_at REAL NOT NULL,
    offline INTEGER NOT NULL DEFAULT 0,
    draining INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL,
    PRIMARY KEY (workspace_id, agent_id)
);
CREATE INDEX IF NOT EXISTS agents_live
    ON agents (workspace_id, last_heartbeat_at) WHERE offline = 0;

CREATE TABLE IF NOT EXISTS breakers (
    workspace_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (workspace_id, agent_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS workspace_limits (
    workspace_id TEXT PRIMARY KEY,
    max_agents INTEGER,
    max_pending_tasks INTEGER,
    max_running_tasks INTEGER,
    max_payload_bytes INTEGER,
    budget REAL,
    budget_period TEXT NOT NULL DEFAULT 'monthly',
    budget_soft_ratio REAL NOT NULL DEFAULT 0.8
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS spend (
    workspace_id TEXT NOT NULL,
    period TEXT NOT NULL,
    reserved REAL NOT NULL DEFAULT 0,
    spent REAL NOT NULL DEFAULT 0,
    soft_alerted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, period)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS spend_breakdown (
    workspace_id TEXT NOT NULL,
    period TEXT NOT NULL,
    dimension TEXT NOT NULL,
    name TEXT NOT NULL,
    amount REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, period, dimension, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS cancel_notices (
    id INTEGER PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    task_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cancel_notices_by_agent
    ON cancel_notices (workspace_id, agent_id, id);
CREATE INDEX IF NOT EXISTS cancel_notices_by_task
    ON cancel_notices (workspace_id, task_id);
"""

_TASK_COLUMNS = (
    "workspace_id, id, seq, task_type, payload, priority_rank, status, capset, attempt,"
    " attempts_allowed, max_retries, timeout_s, created_at, lease_token, agent_id, result,"
    " error, errors, started_at, finished_at, lease_expires_at, available_at,"
    " idempotency_key, metadata, cost, cost_estimate"
)
_AGENT_COLUMNS = (
    "workspace_id, agent_id, capabilities, model, max_concurrent_tasks, registered_at,"
    " last_heartbeat_at, offline, draining, metadata"
)


@dataclass(slots=True)
class _Tx:
    """One open transaction: its connection, its single ``now`` and what to announce
    once it has committed."""

    conn: sqlite3.Connection
    now: float
    ready: set[str] = field(default_factory=set)
    done: set[tuple[str, str]] = field(default_factory=set)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(slots=True)
class _Reaped:
    requeued: int = 0
    failed: int = 0


class SqliteStore(Store):
    """Store on one SQLite file, safe to share between processes on one host.

    ``path`` is the database file; its parent directories are created on ``open``.
    """

    def __init__(self, config: ControlPlaneConfig, path: str) -> None:
        super().__init__(config)
        self.path = path
        self._hub = NotificationHub()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._data_version: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._wakeup: LocalWakeup | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        """Open the file (WAL, ``synchronous=NORMAL``) and create the schema if missing."""
        if self._closed:
            raise StoreUnavailableError("the SQLite store is closed")
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aragora-sqlite")
        try:
            await self._run(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        if self.path != ":memory:" and not self.path.startswith("file:"):
            self._wakeup = LocalWakeup.open(self.path)
        if self._wakeup is not None:
            self._wakeup.listen(self._on_wakeup)

    def _open_sync(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                message = f"cannot create the directory {parent!r}: {exc}"
                raise StoreUnavailableError(message) from exc
        busy_timeout_s = self.config.sqlite_busy_timeout_s
        conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._data_version = _data_version(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Stop watching for other processes' commits, close the connection and the
        worker thread, and wake every waiter (their next call reports the store closed)."""
        if self._closed:
            return
        self._closed = True
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        executor, self._executor = self._executor, None
        if executor is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(executor, self._close_sync)
            executor.shutdown(wait=True)
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.close()
        self._hub.notify_all()

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def ping(self) -> None:
        """Run a trivial query on the worker thread."""
        await self._run(self._ping_sync)

    def _ping_sync(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    async def now(self) -> float:
        return self._now()

    def _now(self) -> float:
        return time.time() + self.clock_offset_s

    # -- running work on the worker thread -----------------------------------------
    async def _run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the worker thread; SQLite errors become StoreUnavailableError."""
        executor = self._executor
        if executor is None or self._closed:
            raise StoreUnavailableError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, self._guarded, fn)
        except RuntimeError as exc:  # the executor was shut down by a concurrent close()
            if self._executor is None:
                raise StoreUnavailableError("the SQLite store is closed") from exc
            raise

    @staticmethod
    def _guarded(fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite error: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreUnavailableError("the SQLite store is not open")
        return conn

    async def _write(self, body: Callable[[_Tx], _T]) -> _T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction, then announce its effects.

        The announcement is scheduled from the worker thread right after the commit,
        so it happens even if the awaiting caller was cancelled meanwhile.
        """
        loop = asyncio.get_running_loop()

        def job() -> _T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            tx = _Tx(conn, self._now())
            try:
                result = body(tx)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._after_commit(loop, tx)
            return result

        return await self._run(job)

    async def _write_batch(
        self, bodies: Sequence[Callable[[_Tx], _T]], expected: tuple[type[ControlPlaneError], ...]
    ) -> list[_T | ControlPlaneError]:
        """Run each body in its own savepoint of one ``BEGIN IMMEDIATE`` transaction: a
        body that raises one of ``expected`` is undone alone and answered by its error;
        anything else undoes the whole batch."""
        loop = asyncio.get_running_loop()

        def job() -> list[_T | ControlPlaneError]:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            tx = _Tx(conn, self._now())
            outcomes: list[_T | ControlPlaneError] = []
            try:
                for body in bodies:
                    conn.execute("SAVEPOINT item")
                    try:
                        outcomes.append(body(tx))
                    except expected as exc:
                        conn.execute("ROLLBACK TO item")
                        outcomes.append(exc)
                    conn.execute("RELEASE item")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._after_commit(loop, tx)
            return outcomes

        return await self._run(job)

    async def _read(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run ``body`` in one read transaction (a consistent snapshot)."""

        def job() -> _T:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                result = body(conn, self._now())
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result

        return await self._run(job)

    async def rewrite_task_data(
        self,
        workspace_id: str,
        task_id: str,
        *,
        payload: tuple[Any, Any] | None = None,
        result: tuple[Any, Any] | None = None,
    ) -> bool:
        changes = {
            column: change
            for column, change in (("payload", payload), ("result", result))
            if change is not None
        }

        def body(conn: sqlite3.Connection, _now: float) -> bool:
            row = conn.execute(
                "SELECT payload, result FROM tasks WHERE workspace_id = ? AND id = ?",
                (workspace_id, task_id),
            ).fetchone()
            if row is None or not changes:
                return False
            for column, (expected, _new) in changes.items():
                stored = row[column]
                if (None if stored is None else json.loads(stored)) != expected:
                    return False
            for column, (_expected, new) in changes.items():
                conn.execute(
                    f"UPDATE tasks SET {column} = ? WHERE workspace_id = ? AND id = ?",
                    (json.dumps(new), workspace_id, task_id),
                )
            return True

        return await self.transaction(body)

    # -- limits and spend ----------------------------------------------------------
    async def set_workspace_limits(self, workspace_id: str, limits: WorkspaceLimits) -> None:
        def body(conn: sqlite3.Connection, _now: float) -> None:
            _touch_workspace(conn, workspace_id)
            conn.execute(
                "INSERT OR REPLACE INTO workspace_limits (workspace_id, max_agents,"
                " max_pending_tasks, max_running_tasks, max_payload_bytes, budget,"
                " budget_period, budget_soft_ratio) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    workspace_id,
                    limits.max_agents,
                    limits.max_pending_tasks,
                    limits.max_running_tasks,
                    limits.max_payload_bytes,
                    limits.budget,
                    limits.budget_period.value,
                    limits.budget_soft_ratio,
                ),
            )

        await self.transaction(body)

    async def get_workspace_limits(self, workspace_id: str) -> WorkspaceLimits:
        return await self._read(lambda conn, _now: _limits(conn, workspace_id))

    async def get_spend(self, workspace_id: str) -> SpendReport:
        def body(conn: sqlite3.Connection, now: float) -> SpendReport:
            limits = _limits(conn, workspace_id)
            period = budget_period_key(now, limits.budget_period.value)
            row = conn.execute(
                "SELECT reserved, spent FROM spend WHERE workspace_id = ? AND period = ?",
                (workspace_id, period),
            ).fetchone()
            breakdown: dict[str, dict[str, float]] = {"type": {}, "model": {}}
            for dimension, name, amount in conn.execute(
                "SELECT dimension, name, amount FROM spend_breakdown"
                " WHERE workspace_id = ? AND period = ?",
                (workspace_id, period),
            ):
                breakdown[dimension][name] = amount
            return SpendReport(
                period=period,
                budget=limits.budget,
                reserved=max(row["reserved"], 0.0) if row else 0.0,
                spent=row["spent"] if row else 0.0,
                by_task_type=breakdown["type"],
                by_model=breakdown["model"],
            )

        return await self._read(body)

    # -- extensions ----------------------------------------------------------------
    async def ensure_schema(self, ddl: str) -> None:
        """Create the tables of an extension (tenancy, policy, audit) if missing."""

        def body(conn: sqlite3.Connection, _now: float) -> None:
            for statement in ddl.split(";"):
                if statement.strip():
                    conn.execute(statement)

        await self.transaction(body)

    async def transaction(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run ``body(conn, now)`` as one ``BEGIN IMMEDIATE`` transaction on the store's
        connection and worker thread, so extensions get the same atomicity and clock."""
        return await self._write(lambda tx: body(tx.conn, tx.now))

    async def snapshot(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run ``body(conn, now)`` in one read transaction (a consistent view)."""
        return await self._read(body)

    def _after_commit(self, loop: asyncio.AbstractEventLoop, tx: _Tx) -> None:
        """On the worker thread, right after a commit: wake other processes' waiters
        and schedule the local announcement (even if the caller was cancelled)."""
        if (tx.ready or tx.done) and self._wakeup is not None:
            self._wakeup.ring()
        if tx.ready or tx.done or tx.alerts:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._announce, tx.ready, tx.done, tx.alerts)

    def _announce(self, ready: set[str], done: set[tuple[str, str]], alerts: list[Alert]) -> None:
        for alert in alerts:
            self._emit(alert)
        for workspace_id in ready:
            self._hub.notify(ready_channel(workspace_id))
        for workspace_id, task_id in done:
            self._hub.notify(task_channel(workspace_id, task_id))

    # -- tasks ---------------------------------------------------------------------
    async def submit(self, task: NewTask) -> tuple[Task, bool]:
        return await self._write(lambda tx: self._submit(tx, task))

    def _submit(self, tx: _Tx, new: NewTask) -> tuple[Task, bool]:
        ws = new.workspace_id
        if new.idempotency_key is not None:
            row = tx.conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE workspace_id = ? AND idempotency_key = ?",
                (ws, new.idempotency_key),
            ).fetchone()
            if row is not None:
                return _task_from_row(row), False
        limits = _limits(tx.conn, ws)
        if limits.max_payload_bytes is not None and new.payload_bytes > limits.max_payload_bytes:
            raise QuotaExceededError(
                "max_payload_bytes", limits.max_payload_bytes, new.payload_bytes
            )
        if limits.max_pending_tasks is not None:
            pending = _count(tx.conn, "tasks WHERE workspace_id = ? AND status = 'pending'", ws)
            if pending >= limits.max_pending_tasks:
                raise QuotaExceededError("max_pending_tasks", limits.max_pending_tasks, pending)
        estimate = new.cost_estimate or 0.0
        period = budget_period_key(tx.now, limits.budget_period.value)
        if limits.budget is not None:
            used = _spend_used(tx.conn, ws, period)
            if used >= limits.budget or used + estimate > limits.budget:
                raise BudgetExceededError(limits.budget, used, estimate)
        if estimate > 0:
            _add_spend(tx.conn, ws, period, reserved=estimate)
        _check_soft_limit(tx, ws, period, limits)
        _touch_workspace(tx.conn, ws)
        tx.conn.execute(
            "UPDATE workspaces SET next_seq = next_seq + 1 WHERE workspace_id = ?", (ws,)
        )
        seq = tx.conn.execute(
            "SELECT next_seq FROM workspaces WHERE workspace_id = ?", (ws,)
        ).fetchone()[0]
        capset = _capset(new.required_capabilities)
        tx.conn.execute(
            "INSERT INTO tasks (workspace_id, id, seq, task_type, payload, priority_rank,"
            " status, capset, attempt, attempts_allowed, max_retries, timeout_s, created_at,"
            " errors, idempotency_key, metadata, cost_estimate, reserved, budget_period)"
            " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, 0, ?, ?, ?, ?, '[]', ?, ?, ?, ?, ?)",
            (
                ws,
                new.id,
                seq,
                new.task_type,
                json.dumps(new.payload),
                new.priority.rank,
                capset,
                1 + new.max_retries,
                new.max_retries,
                new.timeout_s,
                tx.now,
                new.idempotency_key,
                json.dumps(new.metadata),
                new.cost_estimate,
                estimate,
                period,
            ),
        )
        _mark_ready(tx, ws, capset)
        return _task_from_row(_task_row(tx.conn, ws, new.id)), True

    async def submit_many(
        self, tasks: Sequence[NewTask]
    ) -> list[tuple[Task, bool] | ControlPlaneError]:
        bodies = [functools.partial(self._submit, new=task) for task in tasks]
        return await self._write_batch(bodies, (QuotaExceededError, BudgetExceededError))

    async def complete_many(
        self, workspace_id: str, items: Sequence[tuple[str, str, Any, float | None]]
    ) -> list[Task | ControlPlaneError]:
        bodies = [
            functools.partial(
                self._complete,
                ws=workspace_id,
                task_id=task_id,
                token=token,
                result=result,
                cost=cost,
            )
            for task_id, token, result, cost in items
        ]
        return await self._write_batch(bodies, (NotFoundError, ConflictError, TaskCancelledError))

    async def claim(self, workspace_id: str, agent_id: str, max_tasks: int = 1) -> ClaimOutcome:
        return await self._write(lambda tx: self._claim(tx, workspace_id, agent_id, max_tasks))

    def _claim(self, tx: _Tx, ws: str, agent_id: str, max_tasks: int) -> ClaimOutcome:
        agent = _agent_row(tx.conn, ws, agent_id)
        _promote_due(tx, ws, _CLAIM_PROMOTE_LIMIT)
        claimed: list[Task] = []
        if not agent["offline"] and not agent["draining"]:
            capacity = agent["max_concurrent_tasks"] - _running_count(tx.conn, ws, agent_id)
            capabilities = _split_caps(agent["capabilities"])
            for _ in range(min(max(max_tasks, 1), capacity)):
                task = self._claim_one(tx, ws, agent_id, capabilities)
                if task is None:
                    break
                claimed.append(task)
        if claimed:
            return ClaimOutcome(tuple(claimed))
        next_due = tx.conn.execute(
            "SELECT MIN(available_at) FROM tasks"
            " WHERE workspace_id = ? AND status = 'pending' AND available_at IS NOT NULL",
            (ws,),
        ).fetchone()[0]
        return ClaimOutcome((), None if next_due is None else next_due - tx.now)

    def _claim_one(
        self, tx: _Tx, ws: str, agent_id: str, capabilities: tuple[str, ...]
    ) -> Task | None:
        """Lease the best task left to the agent, if its breaker and the running limit
        allow; the caller checked its capacity."""
        record = _load_breaker(tx.conn, ws, agent_id)
        if not breaker_peek(record, tx.now, self.config) or not _below_running_limit(tx.conn, ws):
            return None
        head = _best_head(tx.conn, ws, capabilities)
        if head is None:
            return None
        before = _breaker_to_json(record)
        breaker_admit(record, tx.now, self.config)
        if _breaker_to_json(record) != before:
            _save_breaker(tx.conn, ws, agent_id, record)
        tx.conn.execute(
            "UPDATE tasks SET status = 'running', attempt = attempt + 1,"
            " lease_token = ?, agent_id = ?, started_at = ?,"
            " lease_expires_at = ? + timeout_s, available_at = NULL"
            " WHERE workspace_id = ? AND id = ?",
            (secrets.token_urlsafe(16), agent_id, tx.now, tx.now, ws, head),
        )
        return _task_from_row(_task_row(tx.conn, ws, head))

    async def complete(
        self, workspace_id: str, task_id: str, lease_token: str, result: Any, cost: float | None
    ) -> Task:
        return await self._write(
            lambda tx: self._complete(tx, workspace_id, task_id, lease_token, result, cost)
        )

    def _complete(
        self, tx: _Tx, ws: str, task_id: str, token: str, result: Any, cost: float | None
    ) -> Task:
        row = _task_row(tx.conn, ws, task_id)
        _check_lease(row, token)
        tx.conn.execute(
            "UPDATE tasks SET status = 'completed', result = ?, cost = ?, finished_at = ?,"
            " lease_token = NULL, lease_expires_at = NULL"
            " WHERE workspace_id = ? AND id = ?",
            (json.dumps(result), cost, tx.now, ws, task_id),
        )
        self._record_outcome(tx, ws, row["agent_id"], ok=True)
        _settle_budget(tx, row, cost)
        tx.done.add((ws, task_id))
        tx.ready.add(ws)
        return _task_from_row(_task_row(tx.conn, ws, task_id))

    async def fail(
        self, workspace_id: str, task_id: str, lease_token: str, error: str, retryable: bool
    ) -> Task:
        return await self._write(
            lambda tx: self._fail(tx, workspace_id, task_id, lease_token, error, retryable)
        )

    def _fail(
        self, tx: _Tx, ws: str, task_id: str, token: str, error: str, retryable: bool
    ) -> Task:
        row = _task_row(tx.conn, ws, task_id)
        _check_lease(row, token)
        self._fail_attempt(tx, row, error, retryable)
        return _task_from_row(_task_row(tx.conn, ws, task_id))

    async def cancel(self, workspace_id: str, task_id: str) -> Task:
        return await self._write(lambda tx: self._cancel(tx, workspace_id, task_id))

    def _cancel(self, tx: _Tx, ws: str, task_id: str) -> Task:
        row = _task_row(tx.conn, ws, task_id)
        status = TaskStatus(row["status"])
        if status is TaskStatus.CANCELLED:
            return _task_from_row(row)
        if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            raise InvalidStateError(f"task {task_id!r} is {status.value} and cannot be cancelled")
        if status is TaskStatus.RUNNING:
            agent_id: str = row["agent_id"]
            record = _load_breaker(tx.conn, ws, agent_id)
            before = _breaker_to_json(record)
            breaker_release(record)
            if _breaker_to_json(record) != before:
                _save_breaker(tx.conn, ws, agent_id, record)
            tx.conn.execute(
                "INSERT INTO cancel_notices (workspace_id, agent_id, task_id) VALUES (?, ?, ?)",
                (ws, agent_id, task_id),
            )
            tx.ready.add(ws)
        tx.conn.execute(
            "UPDATE tasks SET status = 'cancelled', finished_at = ?, lease_token = NULL,"
            " lease_expires_at = NULL, available_at = NULL"
            " WHERE workspace_id = ? AND id = ?",
            (tx.now, ws, task_id),
        )
        _release_budget(tx.conn, ws, task_id)
        tx.done.add((ws, task_id))
        return _task_from_row(_task_row(tx.conn, ws, task_id))

    async def retry(self, workspace_id: str, task_id: str) -> Task:
        return await self._write(lambda tx: self._retry(tx, workspace_id, task_id))

    def _retry(self, tx: _Tx, ws: str, task_id: str) -> Task:
        row = _task_row(tx.conn, ws, task_id)
        if row["status"] != TaskStatus.FAILED.value:
            raise InvalidStateError(
                f"task {task_id!r} is {row['status']}; only a failed task can be retried"
            )
        tx.conn.execute(
            "UPDATE tasks SET status = 'pending', attempts_allowed = attempt + 1 + max_retries,"
            " error = NULL, finished_at = NULL, agent_id = NULL, lease_token = NULL,"
            " lease_expires_at = NULL, available_at = NULL"
            " WHERE workspace_id = ? AND id = ?",
            (ws, task_id),
        )
        _mark_ready(tx, ws, row["capset"])
        return _task_from_row(_task_row(tx.conn, ws, task_id))

    async def get_task(self, workspace_id: str, task_id: str) -> Task:
        return await self._read(
            lambda conn, _now: _task_from_row(_task_row(conn, workspace_id, task_id))
        )

    async def list_tasks(
        self,
        workspace_id: str,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        """Newest first; the cursor is the ``seq`` of the last task returned."""
        before: int | None = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
                raise ValidationError("cursor", "is not a cursor returned by list_tasks")
            before = int(cursor)
        clauses = ["workspace_id = ?"]
        params: list[Any] = [workspace_id]
        if status is not None:
            clauses.append("status = ?")
            params.append(TaskStatus(status).value)
        if task_type is not None:
            clauses.append("task_type = ?")
            params.append(task_type)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        sql = (
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {' AND '.join(clauses)}"
            " ORDER BY seq DESC LIMIT ?"
        )
        params.append(limit + 1)

        def body(conn: sqlite3.Connection, _now: float) -> TaskPage:
            rows = conn.execute(sql, params).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            next_cursor = str(rows[-1]["seq"]) if more and rows else None
            return TaskPage([_task_from_row(r) for r in rows], next_cursor)

        return await self._read(body)

    async def counts(self, workspace_id: str) -> TaskCounts:
        """``pending`` includes delayed tasks; ``delayed`` are those not yet due."""

        def body(conn: sqlite3.Connection, now: float) -> TaskCounts:
            by_status = {
                status: n
                for status, n in conn.execute(
                    "SELECT status, COUNT(*) FROM tasks WHERE workspace_id = ? GROUP BY status",
                    (workspace_id,),
                )
            }
            delayed = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE workspace_id = ? AND status = 'pending'"
                " AND available_at IS NOT NULL AND available_at > ?",
                (workspace_id, now),
            ).fetchone()[0]
            return TaskCounts(
                pending=by_status.get(TaskStatus.PENDING.value, 0),
                delayed=delayed,
                running=by_status.get(TaskStatus.RUNNING.value, 0),
                completed=by_status.get(TaskStatus.COMPLETED.value, 0),
                failed=by_status.get(TaskStatus.FAILED.value, 0),
                cancelled=by_status.get(TaskStatus.CANCELLED.value, 0),
            )

        return await self._read(body)

    # -- agents --------------------------------------------------------------------
    async def register_agent(
        self,
        workspace_id: str,
        agent_id: str,
        capabilities: tuple[str, ...],
        model: str,
        max_concurrent_tasks: int,
        metadata: dict[str, Any],
    ) -> AgentInfo:
        """Create or update the agent (``registered_at`` is kept on update); tasks still
        leased to the id end as failed attempts ("agent re-registered")."""
        return await self._write(
            lambda tx: self._register(
                tx, workspace_id, agent_id, capabilities, model, max_concurrent_tasks, metadata
            )
        )

    def _register(
        self,
        tx: _Tx,
        ws: str,
        agent_id: str,
        capabilities: tuple[str, ...],
        model: str,
        max_concurrent_tasks: int,
        metadata: dict[str, Any],
    ) -> AgentInfo:
        max_agents = _limits(tx.conn, ws).max_agents
        if max_agents is not None:
            exists = tx.conn.execute(
                "SELECT 1 FROM agents WHERE workspace_id = ? AND agent_id = ?", (ws, agent_id)
            ).fetchone()
            agents = _count(tx.conn, "agents WHERE workspace_id = ?", ws)
            if exists is None and agents >= max_agents:
                raise QuotaExceededError("max_agents", max_agents, agents)
        _touch_workspace(tx.conn, ws)
        tx.conn.execute(
            "INSERT INTO agents (workspace_id, agent_id, capabilities, model,"
            " max_concurrent_tasks, registered_at, last_heartbeat_at, offline, draining, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)"
            " ON CONFLICT (workspace_id, agent_id) DO UPDATE SET"
            " capabilities = excluded.capabilities, model = excluded.model,"
            " max_concurrent_tasks = excluded.max_concurrent_tasks,"
            " last_heartbeat_at = excluded.last_heartbeat_at, offline = 0, draining = 0,"
            " metadata = excluded.metadata",
            (
                ws,
                agent_id,
                _capset(capabilities),
                model,
                max_concurrent_tasks,
                tx.now,
                tx.now,
                json.dumps(metadata),
            ),
        )
        for row in _running_rows(tx.conn, ws, agent_id):
            self._fail_attempt(tx, row, "agent re-registered", retryable=True)
        tx.ready.add(ws)
        return _agent_info(tx.conn, _agent_row(tx.conn, ws, agent_id))

    async def heartbeat(
        self, workspace_id: str, agent_id: str, draining: bool | None
    ) -> HeartbeatResult:
        return await self._write(lambda tx: self._heartbeat(tx, workspace_id, agent_id, draining))

    def _heartbeat(self, tx: _Tx, ws: str, agent_id: str, draining: bool | None) -> HeartbeatResult:
        agent = _agent_row(tx.conn, ws, agent_id)
        now_draining = bool(agent["draining"]) if draining is None else draining
        tx.conn.execute(
            "UPDATE agents SET last_heartbeat_at = ?, offline = 0, draining = ?"
            " WHERE workspace_id = ? AND agent_id = ?",
            (tx.now, int(now_draining), ws, agent_id),
        )
        if not now_draining and (agent["offline"] or agent["draining"]):
            tx.ready.add(ws)
        notices = tx.conn.execute(
            "SELECT id, task_id FROM cancel_notices WHERE workspace_id = ? AND agent_id = ?"
            " ORDER BY id",
            (ws, agent_id),
        ).fetchall()
        if notices:
            tx.conn.execute(
                "DELETE FROM cancel_notices WHERE workspace_id = ? AND agent_id = ? AND id <= ?",
                (ws, agent_id, notices[-1]["id"]),
            )
        return HeartbeatResult(
            _agent_info(tx.conn, _agent_row(tx.conn, ws, agent_id)),
            tuple(n["task_id"] for n in notices),
        )

    async def deregister_agent(self, workspace_id: str, agent_id: str) -> None:
        """Remove the agent; its tasks end as failed attempts ("agent deregistered").
        Its breaker record stays, so registering again does not reset it."""
        await self._write(lambda tx: self._deregister(tx, workspace_id, agent_id))

    def _deregister(self, tx: _Tx, ws: str, agent_id: str) -> None:
        _agent_row(tx.conn, ws, agent_id)
        for row in _running_rows(tx.conn, ws, agent_id):
            self._fail_attempt(tx, row, "agent deregistered", retryable=True)
        tx.conn.execute(
            "DELETE FROM agents WHERE workspace_id = ? AND agent_id = ?", (ws, agent_id)
        )
        tx.conn.execute(
            "DELETE FROM cancel_notices WHERE workspace_id = ? AND agent_id = ?", (ws, agent_id)
        )
        tx.ready.add(ws)

    async def get_agent(self, workspace_id: str, agent_id: str) -> AgentInfo:
        return await self._read(
            lambda conn, _now: _agent_info(conn, _agent_row(conn, workspace_id, agent_id))
        )

    async def list_agents(
        self,
        workspace_id: str,
        *,
        capability: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[AgentInfo]:
        """Agents of the workspace by id, optionally only those with ``capability``
        and only those in ``status``."""

        def body(conn: sqlite3.Connection, _now: float) -> list[AgentInfo]:
            running: dict[str, list[str]] = {}
            for agent_id, task_id in conn.execute(
                "SELECT agent_id, id FROM tasks WHERE workspace_id = ? AND status = 'running'"
                " ORDER BY seq",
                (workspace_id,),
            ):
                running.setdefault(agent_id, []).append(task_id)
            agents = []
            for row in conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents WHERE workspace_id = ? ORDER BY agent_id",
                (workspace_id,),
            ):
                info = _agent_info_from(row, running.get(row["agent_id"], []))
                if capability is not None and capability not in info.capabilities:
                    continue
                if status is not None and info.status is not status:
                    continue
                agents.append(info)
            return agents

        return await self._read(body)

    async def get_breaker(self, workspace_id: str, agent_id: str) -> BreakerInfo:
        """The agent's breaker as stored: an OPEN breaker whose cool-down is over still
        reads OPEN until a claim admits a trial. No record yet means CLOSED and empty."""

        def body(conn: sqlite3.Connection, now: float) -> BreakerInfo:
            record = _load_breaker(conn, workspace_id, agent_id)
            calls, failures = record.window(now, self.config)
            return BreakerInfo(
                agent_id=agent_id,
                state=record.state,
                calls=calls,
                failures=failures,
                opened_at=record.opened_at,
                half_open_in_flight=record.half_open_in_flight,
            )

        return await self._read(body)

    # -- maintenance ---------------------------------------------------------------
    async def reap(self, workspace_id: str) -> ReapReport:
        return await self._write(lambda tx: self._reap(tx, workspace_id))

    def _reap(self, tx: _Tx, ws: str) -> ReapReport:
        outcome = _Reaped()

        def lose(row: sqlite3.Row, error: str) -> None:
            if self._fail_attempt(tx, row, error, retryable=True) is TaskStatus.PENDING:
                outcome.requeued += 1
            else:
                outcome.failed += 1

        silent = [
            r["agent_id"]
            for r in tx.conn.execute(
                "SELECT agent_id FROM agents WHERE workspace_id = ? AND offline = 0"
                " AND last_heartbeat_at < ?",
                (ws, tx.now - self.config.heartbeat_timeout),
            ).fetchall()
        ]
        for agent_id in silent:
            tx.conn.execute(
                "UPDATE agents SET offline = 1 WHERE workspace_id = ? AND agent_id = ?",
                (ws, agent_id),
            )
            for row in _running_rows(tx.conn, ws, agent_id):
                lose(row, "agent offline")

        expired_leases = tx.conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE workspace_id = ? AND status = 'running'"
            " AND lease_expires_at <= ? ORDER BY lease_expires_at",
            (ws, tx.now),
        ).fetchall()
        for row in expired_leases:
            lose(row, f"timed out after {row['timeout_s']:g}s")

        promoted = _promote_due(tx, ws, None)

        cutoff = tx.now - self.config.result_ttl_s
        old = [
            r["id"]
            for r in tx.conn.execute(
                "SELECT id FROM tasks WHERE workspace_id = ? AND finished_at IS NOT NULL"
                " AND finished_at <= ?",
                (ws, cutoff),
            ).fetchall()
        ]
        for task_id in old:
            tx.conn.execute("DELETE FROM tasks WHERE workspace_id = ? AND id = ?", (ws, task_id))
            tx.conn.execute(
                "DELETE FROM cancel_notices WHERE workspace_id = ? AND task_id = ?", (ws, task_id)
            )
        return ReapReport(
            agents_offline=len(silent),
            tasks_requeued=outcome.requeued,
            tasks_failed=outcome.failed,
            tasks_promoted=promoted,
            tasks_expired=len(old),
        )

    async def list_workspaces(self) -> Sequence[str]:
        return await self._read(
            lambda conn, _now: [
                r[0] for r in conn.execute("SELECT workspace_id FROM workspaces ORDER BY 1")
            ]
        )

    # -- the failed-attempt path and breakers --------------------------------------
    def _fail_attempt(self, tx: _Tx, row: sqlite3.Row, error: str, retryable: bool) -> TaskStatus:
        """End the running attempt in ``row`` as failed: back to pending after the
        backoff while attempts remain (and ``retryable``), else FAILED. Frees the slot
        and records a breaker failure for the agent."""
        ws: str = row["workspace_id"]
        task_id: str = row["id"]
        attempt: int = row["attempt"]
        agent_id: str | None = row["agent_id"]
        errors = json.loads(row["errors"])
        errors.append(AttemptError(attempt, error, agent_id, tx.now).to_dict())
        if retryable and attempt < row["attempts_allowed"]:
            delay = retry_delay_s(attempt, self.config, random.random())
            tx.conn.execute(
                "UPDATE tasks SET status = 'pending', available_at = ?, lease_token = NULL,"
                " lease_expires_at = NULL, agent_id = NULL, error = ?, errors = ?"
                " WHERE workspace_id = ? AND id = ?",
                (tx.now + delay, error, json.dumps(errors), ws, task_id),
            )
            status = TaskStatus.PENDING
        else:
            tx.conn.execute(
                "UPDATE tasks SET status = 'failed', finished_at = ?, lease_token = NULL,"
                " lease_expires_at = NULL, available_at = NULL, error = ?, errors = ?"
                " WHERE workspace_id = ? AND id = ?",
                (tx.now, error, json.dumps(errors), ws, task_id),
            )
            status = TaskStatus.FAILED
            _release_budget(tx.conn, ws, task_id)
            tx.done.add((ws, task_id))
        if agent_id is not None:
            self._record_outcome(tx, ws, agent_id, ok=False)
        tx.ready.add(ws)
        return status

    def _record_outcome(self, tx: _Tx, ws: str, agent_id: str, *, ok: bool) -> None:
        record = _load_breaker(tx.conn, ws, agent_id)
        breaker_record(record, ok, tx.now, self.config)
        _save_breaker(tx.conn, ws, agent_id, record)

    # -- notifications -------------------------------------------------------------
    def watch_ready(self, workspace_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._watch(ready_channel(workspace_id))

    def watch_task(self, workspace_id: str, task_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._watch(task_channel(workspace_id, task_id))

    @asynccontextmanager
    async def _watch(self, channel: Hashable) -> AsyncIterator[Watch]:
        async with self._hub.watch(channel) as watch:
            idle = self._poller is None or self._poller.done()
            if idle and self._executor is not None and not self._closed:
                self._poller = asyncio.create_task(
                    self._poll_other_commits(), name="aragora-sqlite-watch"
                )
            yield watch

    async def _poll_other_commits(self) -> None:
        """While anyone waits, wake every waiter when another connection has committed.

        ``PRAGMA data_version`` of this store's connection changes only on commits of
        other connections. The last value is kept across pauses, so a commit made while
        nobody was polling still wakes the next waiters (at worst once too often).
        """
        while not self._closed:
            if self._hub.waiting == 0:
                self._poller = None
                return
            try:
                version: int | None = await self._run(self._data_version_sync)
            except StoreUnavailableError:
                version = None
            if version is None or version != self._data_version:
                self._data_version = version
                self._hub.notify_all()
            await asyncio.sleep(
                _POLL_INTERVAL_S if self._wakeup is None else FALLBACK_POLL_INTERVAL_S
            )

    def _on_wakeup(self) -> None:
        """Another process committed something that may interest our waiters."""
        if self._hub.waiting:
            self._hub.notify_all()

    def _data_version_sync(self) -> int:
        return _data_version(self._connection())


# -- helpers run inside a transaction on the worker thread -----------------------------
def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _data_version(conn: sqlite3.Connection) -> int:
    value: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return value


def _capset(capabilities: Sequence[str]) -> str:
    return ",".join(sorted(set(capabilities)))


def _split_caps(capset: str) -> tuple[str, ...]:
    return tuple(capset.split(",")) if capset else ()


def _touch_workspace(conn: sqlite3.Connection, ws: str) -> None:
    conn.execute("INSERT OR IGNORE INTO workspaces (workspace_id) VALUES (?)", (ws,))


def _mark_ready(tx: _Tx, ws: str, capset: str) -> None:
    tx.conn.execute(
        "INSERT OR IGNORE INTO ready_queues (workspace_id, capset) VALUES (?, ?)", (ws, capset)
    )
    tx.ready.add(ws)


def _promote_due(tx: _Tx, ws: str, limit: int | None) -> int:
    """Make delayed tasks whose backoff is over ready; at most ``limit`` of them."""
    rows = tx.conn.execute(
        "SELECT id, capset FROM tasks WHERE workspace_id = ? AND status = 'pending'"
        " AND available_at IS NOT NULL AND available_at <= ? ORDER BY available_at LIMIT ?",
        (ws, tx.now, -1 if limit is None else limit),
    ).fetchall()
    for row in rows:
        tx.conn.execute(
            "UPDATE tasks SET available_at = NULL WHERE workspace_id = ? AND id = ?",
            (ws, row["id"]),
        )
        _mark_ready(tx, ws, row["capset"])
    return len(rows)


def _best_head(conn: sqlite3.Connection, ws: str, capabilities: tuple[str, ...]) -> str | None:
    """The id of the best ready task the capabilities allow: the head of every ready
    queue whose capability set they cover, compared by (rank, seq). Queues found
    empty are dropped."""
    have = set(capabilities)
    best: tuple[int, int, str] | None = None
    queues = conn.execute("SELECT capset FROM ready_queues WHERE workspace_id = ?", (ws,))
    for (capset,) in queues.fetchall():
        if not have.issuperset(_split_caps(capset)):
            continue
        head = conn.execute(
            "SELECT priority_rank, seq, id FROM tasks WHERE workspace_id = ? AND capset = ?"
            " AND status = 'pending' AND available_at IS NULL"
            " ORDER BY priority_rank, seq LIMIT 1",
            (ws, capset),
        ).fetchone()
        if head is None:
            conn.execute(
                "DELETE FROM ready_queues WHERE workspace_id = ? AND capset = ?", (ws, capset)
            )
            continue
        key = (head[0], head[1], head[2])
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def _task_row(conn: sqlite3.Connection, ws: str, task_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE workspace_id = ? AND id = ?", (ws, task_id)
    ).fetchone()
    if row is None:
        raise TaskNotFoundError(task_id)
    return row


def _running_rows(conn: sqlite3.Connection, ws: str, agent_id: str) -> list[sqlite3.Row]:
    rows: list[sqlite3.Row] = conn.execute(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE workspace_id = ? AND agent_id = ?"
        " AND status = 'running' ORDER BY seq",
        (ws, agent_id),
    ).fetchall()
    return rows


def _running_count(conn: sqlite3.Connection, ws: str, agent_id: str) -> int:
    count: int = conn.execute(
        "SELECT COUNT(*) FROM tasks WHERE workspace_id = ? AND agent_id = ? AND status = 'running'",
        (ws, agent_id),
    ).fetchone()[0]
    return count


def _check_lease(row: sqlite3.Row, token: str) -> None:
    """Raise unless ``row`` is RUNNING under ``token``."""
    if row["status"] == TaskStatus.CANCELLED.value:
        raise TaskCancelledError(row["id"])
    current: str | None = row["lease_token"]
    if (
        row["status"] != TaskStatus.RUNNING.value
        or current is None
        or not secrets.compare_digest(current.encode(), token.encode())
    ):
        raise LeaseLostError(row["id"])


def _task_from_row(row: sqlite3.Row) -> Task:
    result = row["result"]
    return Task(
        id=row["id"],
        task_type=row["task_type"],
        payload=json.loads(row["payload"]),
        priority=TaskPriority.from_rank(row["priority_rank"]),
        status=TaskStatus(row["status"]),
        required_capabilities=_split_caps(row["capset"]),
        workspace_id=row["workspace_id"],
        attempt=row["attempt"],
        max_retries=row["max_retries"],
        timeout_s=row["timeout_s"],
        created_at=row["created_at"],
        lease_token=row["lease_token"],
        agent_id=row["agent_id"],
        result=None if result is None else json.loads(result),
        error=row["error"],
        errors=tuple(AttemptError.from_dict(e) for e in json.loads(row["errors"])),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_expires_at=row["lease_expires_at"],
        available_at=row["available_at"],
        idempotency_key=row["idempotency_key"],
        metadata=json.loads(row["metadata"]),
        cost=row["cost"],
        cost_estimate=row["cost_estimate"],
    )


def _agent_row(conn: sqlite3.Connection, ws: str, agent_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_AGENT_COLUMNS} FROM agents WHERE workspace_id = ? AND agent_id = ?",
        (ws, agent_id),
    ).fetchone()
    if row is None:
        raise AgentNotFoundError(agent_id)
    return row


def _agent_info(conn: sqlite3.Connection, row: sqlite3.Row) -> AgentInfo:
    running = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM tasks WHERE workspace_id = ? AND agent_id = ? AND status = 'running'"
            " ORDER BY seq",
            (row["workspace_id"], row["agent_id"]),
        )
    ]
    return _agent_info_from(row, running)


def _agent_info_from(row: sqlite3.Row, running: list[str]) -> AgentInfo:
    return AgentInfo(
        agent_id=row["agent_id"],
        workspace_id=row["workspace_id"],
        capabilities=_split_caps(row["capabilities"]),
        model=row["model"],
        status=agent_status(bool(row["offline"]), bool(row["draining"]), len(running)),
        max_concurrent_tasks=row["max_concurrent_tasks"],
        running_task_ids=tuple(running),
        registered_at=row["registered_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        metadata=json.loads(row["metadata"]),
    )


def _load_breaker(conn: sqlite3.Connection, ws: str, agent_id: str) -> BreakerRecord:
    row = conn.execute(
        "SELECT record FROM breakers WHERE workspace_id = ? AND agent_id = ?", (ws, agent_id)
    ).fetchone()
    if row is None:
        return BreakerRecord()
    data = json.loads(row[0])
    return BreakerRecord(
        state=BreakerState(data["state"]),
        opened_at=data["opened_at"],
        half_open_in_flight=int(data["half_open_in_flight"]),
        half_open_successes=int(data["half_open_successes"]),
        buckets={int(i): (int(c), int(f)) for i, c, f in data["buckets"]},
    )


def _breaker_to_json(record: BreakerRecord) -> str:
    return json.dumps(
        {
            "state": record.state.value,
            "opened_at": record.opened_at,
            "half_open_in_flight": record.half_open_in_flight,
            "half_open_successes": record.half_open_successes,
            "buckets": [[i, c, f] for i, (c, f) in sorted(record.buckets.items())],
        }
    )


def _save_breaker(conn: sqlite3.Connection, ws: str, agent_id: str, record: BreakerRecord) -> None:
    conn.execute(
        "INSERT INTO breakers (workspace_id, agent_id, record) VALUES (?, ?, ?)"
        " ON CONFLICT (workspace_id, agent_id) DO UPDATE SET record = excluded.record",
        (ws, agent_id, _breaker_to_json(record)),
    )


# -- limits and budget -------------------------------------------------------------------
def _count(conn: sqlite3.Connection, from_where: str, ws: str) -> int:
    count: int = conn.execute(f"SELECT COUNT(*) FROM {from_where}", (ws,)).fetchone()[0]
    return count


def _limits(conn: sqlite3.Connection, ws: str) -> WorkspaceLimits:
    row = conn.execute(
        "SELECT max_agents, max_pending_tasks, max_running_tasks, max_payload_bytes, budget,"
        " budget_period, budget_soft_ratio FROM workspace_limits WHERE workspace_id = ?",
        (ws,),
    ).fetchone()
    if row is None:
        return WorkspaceLimits()
    return WorkspaceLimits(
        max_agents=row["max_agents"],
        max_pending_tasks=row["max_pending_tasks"],
        max_running_tasks=row["max_running_tasks"],
        max_payload_bytes=row["max_payload_bytes"],
        budget=row["budget"],
        budget_period=BudgetPeriod(row["budget_period"]),
        budget_soft_ratio=row["budget_soft_ratio"],
    )


def _below_running_limit(conn: sqlite3.Connection, ws: str) -> bool:
    limit = _limits(conn, ws).max_running_tasks
    if limit is None:
        return True
    return _count(conn, "tasks WHERE workspace_id = ? AND status = 'running'", ws) < limit


def _spend_used(conn: sqlite3.Connection, ws: str, period: str) -> float:
    row = conn.execute(
        "SELECT reserved + spent FROM spend WHERE workspace_id = ? AND period = ?", (ws, period)
    ).fetchone()
    return float(row[0]) if row else 0.0


def _add_spend(
    conn: sqlite3.Connection, ws: str, period: str, *, reserved: float = 0.0, spent: float = 0.0
) -> None:
    conn.execute(
        "INSERT INTO spend (workspace_id, period, reserved, spent) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (workspace_id, period) DO UPDATE SET"
        " reserved = reserved + excluded.reserved, spent = spent + excluded.spent",
        (ws, period, reserved, spent),
    )


def _check_soft_limit(tx: _Tx, ws: str, period: str, limits: WorkspaceLimits) -> None:
    """Queue one ``budget.soft_limit`` alert per period once use reaches the soft ratio."""
    if limits.budget is None:
        return
    used = _spend_used(tx.conn, ws, period)
    if used < limits.budget_soft_ratio * limits.budget:
        return
    _add_spend(tx.conn, ws, period)
    changed = tx.conn.execute(
        "UPDATE spend SET soft_alerted = 1"
        " WHERE workspace_id = ? AND period = ? AND soft_alerted = 0",
        (ws, period),
    ).rowcount
    if changed:
        row = tx.conn.execute(
            "SELECT reserved, spent FROM spend WHERE workspace_id = ? AND period = ?",
            (ws, period),
        ).fetchone()
        details = {
            "period": period,
            "budget": limits.budget,
            "spent": row["spent"],
            "reserved": max(row["reserved"], 0.0),
        }
        tx.alerts.append(Alert("budget.soft_limit", ws, tx.now, details))


def _release_budget(conn: sqlite3.Connection, ws: str, task_id: str) -> None:
    row = conn.execute(
        "SELECT reserved, budget_period FROM tasks WHERE workspace_id = ? AND id = ?",
        (ws, task_id),
    ).fetchone()
    if row["reserved"] > 0 and row["budget_period"] is not None:
        _add_spend(conn, ws, row["budget_period"], reserved=-row["reserved"])
    conn.execute("UPDATE tasks SET reserved = 0 WHERE workspace_id = ? AND id = ?", (ws, task_id))


def _settle_budget(tx: _Tx, task: sqlite3.Row, cost: float | None) -> None:
    """Return the task's reservation and book its actual cost (the estimate if none)."""
    ws: str = task["workspace_id"]
    limits = _limits(tx.conn, ws)
    row = tx.conn.execute(
        "SELECT reserved, budget_period, cost_estimate FROM tasks"
        " WHERE workspace_id = ? AND id = ?",
        (ws, task["id"]),
    ).fetchone()
    period = row["budget_period"] or budget_period_key(tx.now, limits.budget_period.value)
    _release_budget(tx.conn, ws, task["id"])
    actual = cost if cost is not None else (row["cost_estimate"] or 0.0)
    if actual > 0:
        _add_spend(tx.conn, ws, period, spent=actual)
        model_row = tx.conn.execute(
            "SELECT model FROM agents WHERE workspace_id = ? AND agent_id = ?",
            (ws, task["agent_id"]),
        ).fetchone()
        for dimension, name in (
            ("type", task["task_type"]),
            ("model", model_row["model"] if model_row else "unknown"),
        ):
            tx.conn.execute(
                "INSERT INTO spend_breakdown (workspace_id, period, dimension, name, amount)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, period, dimension, name)"
                " DO UPDATE SET amount = amount + excluded.amount",
                (ws, period, dimension, name, actual),
            )
    _check_soft_limit(tx, ws, period, limits)
