"""Policy rules, feature flags and rate limits on Redis.

Keys, all in the workspace's hash slot (``<prefix>{<ws>}:``):

``policy:rules`` / ``policy:flags``
    hash: document id -> ``{"at": <ms>, "doc": <JSON>}``
``policy:rules:version`` / ``policy:flags:version``
    counter bumped by every write of the collection
``rl:<key>``
    GCRA theoretical arrival time in us of one rate limit; expires by itself

Writes, and the read of a whole collection (version and documents together), are Lua
scripts from ``lua/``, whose headers document KEYS and ARGV.
"""

from __future__ import annotations

import json
from importlib import resources

from redis.commands.core import AsyncScript

from aragora.policy.ratelimit import GcraStep, RateLimiter
from aragora.policy.store import Documents, Kind, PolicyStore
from aragora.store.redis import RedisStore


def _script(store: RedisStore, name: str) -> AsyncScript:
    source = (resources.files("aragora.policy") / "lua" / f"{name}.lua").read_text("utf-8")
    return store.client.register_script(source)


class RedisPolicyStore(PolicyStore):
    """``PolicyStore`` on the Redis connection pool of ``store`` (which must be open)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._read_script = _script(store, "doc_read")
        self._put_script = _script(store, "doc_put")
        self._delete_script = _script(store, "doc_delete")

    def _keys(self, workspace_id: str, kind: Kind) -> list[str]:
        docs = self._store.workspace_key(workspace_id, f"policy:{kind}")
        return [docs, docs + ":version"]

    async def _read(self, workspace_id: str, kind: Kind) -> tuple[int, Documents]:
        keys = self._keys(workspace_id, kind)
        version, flat = await self._store.call(lambda: self._read_script(keys=keys, args=[]))
        docs: Documents = {}
        for i in range(0, len(flat), 2):
            envelope = json.loads(flat[i + 1])
            docs[flat[i]] = (envelope["doc"], envelope["at"] / 1000)
        return int(version or 0), docs

    async def _put(
        self, workspace_id: str, kind: Kind, doc_id: str, doc: str, max_docs: int
    ) -> int | None:
        keys = self._keys(workspace_id, kind)
        args: list[str | int] = [self._store.clock_offset_ms(), doc_id, doc, max_docs]
        version = int(await self._store.call(lambda: self._put_script(keys=keys, args=args)))
        return None if version < 0 else version

    async def _delete(self, workspace_id: str, kind: Kind, doc_id: str) -> int | None:
        keys = self._keys(workspace_id, kind)
        version = int(await self._store.call(lambda: self._delete_script(keys=keys, args=[doc_id])))
        return None if version < 0 else version

    async def _version(self, workspace_id: str, kind: Kind) -> int:
        version_key = self._keys(workspace_id, kind)[1]
        value = await self._store.call(lambda: self._store.client.get(version_key))
        return int(value or 0)


class RedisRateLimiter(RateLimiter):
    """``RateLimiter`` as one Lua script per hit (``lua/rate_limit.lua``)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._script = _script(store, "rate_limit")

    async def _hit(
        self, workspace_id: str, key: str, limit: int, window_us: int, cost: int
    ) -> GcraStep:
        keys = [self._store.workspace_key(workspace_id, "rl:" + key)]
        args = [self._store.clock_offset_ms(), limit, window_us, cost]
        reply = await self._store.call(lambda: self._script(keys=keys, args=args))
        allowed, remaining, retry_after_us, reset_after_us = (int(v) for v in reply)
        return GcraStep(bool(allowed), remaining, retry_after_us, reset_after_us, 0)
