"""Audit chains on Redis: a stream of events and a head hash per workspace.

Keys (both in the workspace's hash slot, see ``RedisStore.workspace_key``):

``audit:events``
    stream; entry id ``<seq>-0``; fields ``body`` (canonical JSON of the event without
    ``seq``, ``prev_hash`` and ``hash``), ``prev`` and ``hash``.
``audit:head``
    hash; ``seq`` and ``hash`` of the last event appended.

Appending is compare-and-append (``lua/append.lua``): read the head and the store time
in one round trip, chain the events on that head in Python (Redis Lua has no SHA-256),
and let the script append them only if the head has not moved. When it has, the script
answers with the current head and time, and the events are chained again on it, after
a small random pause, for at most ``MAX_APPEND_ATTEMPTS`` attempts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from aragora.audit.base import AuditIntegrityError, ChainHead, CorruptEvent, StoredEvent
from aragora.audit.events import AuditDraft, AuditEvent, canonical_json, chain_events
from aragora.control_plane.errors import StoreUnavailableError
from aragora.store.redis import RedisStore

EVENTS_SUFFIX = "audit:events"
HEAD_SUFFIX = "audit:head"
MAX_APPEND_ATTEMPTS = 100
RETRY_PAUSE_STEP_S = 0.001
RETRY_PAUSE_MAX_S = 0.01

# KEYS[1] the head hash. Returns {{seq, hash}, TIME} (missing fields are nil/false).
_HEAD_AND_TIME_LUA = """
return { redis.call('HMGET', KEYS[1], 'seq', 'hash'), redis.call('TIME') }
"""


def _load_append_script() -> str:
    return (resources.files("aragora.audit") / "lua" / "append.lua").read_text(encoding="utf-8")


class RedisAuditStore:
    """``AuditStore`` on a ``RedisStore``; shares its connection pool and clock."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._script: AsyncScript | None = None
        self._head_script: AsyncScript | None = None

    def events_key(self, workspace_id: str) -> str:
        """The stream that holds the workspace's events."""
        return self._store.workspace_key(workspace_id, EVENTS_SUFFIX)

    def head_key(self, workspace_id: str) -> str:
        """The hash that holds the workspace's chain head."""
        return self._store.workspace_key(workspace_id, HEAD_SUFFIX)

    def _append_script(self) -> AsyncScript:
        if self._script is None:
            self._script = self._store.client.register_script(_load_append_script())
        return self._script

    async def append(self, workspace_id: str, drafts: Sequence[AuditDraft]) -> list[AuditEvent]:
        if not drafts:
            return []
        keys = [self.head_key(workspace_id), self.events_key(workspace_id)]
        script = self._append_script()
        head, time_ms = await self._head_and_time(workspace_id)
        for attempt in range(MAX_APPEND_ATTEMPTS):
            events = chain_events(drafts, head_seq=head.seq, head_hash=head.hash, time_ms=time_ms)
            args: list[Any] = [head.seq, head.hash, len(events)]
            for event in events:
                args += [event.hash, canonical_json(event.body())]
            reply = await self._store.call(functools.partial(script, keys=keys, args=args))
            code = int(reply[0])
            if code == 1:
                return events
            if code == -1:
                raise AuditIntegrityError(workspace_id, str(reply[1]))
            head = ChainHead(int(reply[1]), str(reply[2]))
            time_ms = self._time_ms(reply[3], reply[4])
            pause_s = min(RETRY_PAUSE_MAX_S, RETRY_PAUSE_STEP_S * (attempt + 1))
            await asyncio.sleep(random.uniform(0, pause_s))
        raise StoreUnavailableError(
            f"audit append to workspace {workspace_id!r} gave up after"
            f" {MAX_APPEND_ATTEMPTS} attempts under contention; nothing was written"
        )

    def _time_ms(self, seconds: Any, micros: Any) -> int:
        return int(seconds) * 1000 + int(micros) // 1000 + self._store.clock_offset_ms()

    async def _head_and_time(self, workspace_id: str) -> tuple[ChainHead, int]:
        # A script, not a pipeline: a cluster pipeline cannot carry TIME, and the script
        # reads the clock of the node that holds the chain.
        if self._head_script is None:
            self._head_script = self._store.client.register_script(_HEAD_AND_TIME_LUA)
        script, keys = self._head_script, [self.head_key(workspace_id)]
        (seq, digest), (seconds, micros) = await self._store.call(
            lambda: script(keys=keys, args=[])
        )
        return _head(workspace_id, seq, digest), self._time_ms(seconds, micros)

    async def head(self, workspace_id: str) -> ChainHead:
        key = self.head_key(workspace_id)
        seq, digest = await self._store.call(lambda: self._store.client.hmget(key, ["seq", "hash"]))
        return _head(workspace_id, seq, digest)

    async def read(
        self, workspace_id: str, *, after_seq: int, limit: int, max_seq: int | None = None
    ) -> list[StoredEvent]:
        key = self.events_key(workspace_id)
        upper = "+" if max_seq is None else str(max_seq)
        entries: list[tuple[str, dict[str, str]]] = await self._store.call(
            lambda: self._store.client.xrange(key, min=str(after_seq + 1), max=upper, count=limit)
        )
        return [_decode(entry_id, fields) for entry_id, fields in entries or []]


def _head(workspace_id: str, seq: str | None, digest: str | None) -> ChainHead:
    if seq is None and digest is None:
        return ChainHead()
    if seq is None or digest is None or not seq.isdigit():
        raise AuditIntegrityError(workspace_id, "the stored head is malformed")
    return ChainHead(int(seq), digest)


def _decode(entry_id: str, fields: dict[str, str]) -> StoredEvent:
    seq = int(entry_id.split("-", 1)[0])
    if entry_id != f"{seq}-0":
        return CorruptEvent(seq, f"unexpected stream entry id {entry_id!r}")
    try:
        data = json.loads(fields["body"])
        if not isinstance(data, dict):
            raise ValueError("body is not an object")
        data.update(seq=seq, prev_hash=fields["prev"], hash=fields["hash"])
        return AuditEvent.from_dict(data)
    except (KeyError, ValueError, TypeError) as exc:
        return CorruptEvent(seq, f"cannot decode the stored event: {exc}")
