"""Reference implementations of ``TaskDataRewriter.rewrite_task_data`` on both stores,
built on their extension points (``SqliteStore.transaction``, ``RedisStore.client``).

The stores do not have this operation yet; these show its contract (one atomic
compare-and-set of payload and/or result) and let ``rotate_tasks`` run on real stores.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

from aragora.control_plane.models import TaskStatus
from aragora.store.base import Store, TaskPage
from aragora.store.redis import RedisStore
from aragora.store.sqlite import SqliteStore

# KEYS[1] the task hash; ARGV in triples: field name, expected JSON, new JSON.
_REDIS_REWRITE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
for i = 1, #ARGV, 3 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2]) end
return 1
"""


class StoreRewriter:
    """``TaskDataRewriter`` over a real store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list_tasks(
        self,
        workspace_id: str,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        return await self.store.list_tasks(
            workspace_id, status=status, task_type=task_type, limit=limit, cursor=cursor
        )

    async def rewrite_task_data(
        self,
        workspace_id: str,
        task_id: str,
        *,
        payload: tuple[Any, Any] | None = None,
        result: tuple[Any, Any] | None = None,
    ) -> bool:
        changes = {
            name: change
            for name, change in (("payload", payload), ("result", result))
            if change is not None
        }
        if isinstance(self.store, SqliteStore):
            return await _rewrite_sqlite(self.store, workspace_id, task_id, changes)
        assert isinstance(self.store, RedisStore)
        return await _rewrite_redis(self.store, workspace_id, task_id, changes)


async def _rewrite_sqlite(
    store: SqliteStore, workspace_id: str, task_id: str, changes: dict[str, tuple[Any, Any]]
) -> bool:
    def body(conn: sqlite3.Connection, _now_s: float) -> bool:
        row = conn.execute(
            "SELECT payload, result FROM tasks WHERE workspace_id = ? AND id = ?",
            (workspace_id, task_id),
        ).fetchone()
        if row is None:
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

    return await store.transaction(body)


async def _rewrite_redis(
    store: RedisStore, workspace_id: str, task_id: str, changes: dict[str, tuple[Any, Any]]
) -> bool:
    script = store.client.register_script(_REDIS_REWRITE)
    args: list[str] = []
    for name, (expected, new) in changes.items():
        args += [name, json.dumps(expected, separators=(",", ":"))]
        args.append(json.dumps(new, separators=(",", ":")))
    key = store.workspace_key(workspace_id, "t:" + task_id)
    written = await store.call(functools.partial(script, keys=[key], args=args))
    return bool(written)
