"""Alert states on Redis, next to the control plane's own keys.

Keys (all share the hash tag ``{alerts}``, so the transition script touches one slot;
times in ms on the store clock):

``<prefix>{alerts}:a:<alert key>``
    hash: the alert's state (fields listed in ``lua/transition.lua``). Event alerts and
    resolved alerts carry an expiry on the store clock, after which they count as
    absent, and a key TTL of the same length that reclaims them.
``<prefix>{alerts}:firing``
    zset: key of every firing condition alert -> time it fired
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from aragora.alerts.models import AlertRecord, AlertSeverity, AlertStatus, Condition
from aragora.alerts.state import AlertStateStore
from aragora.store.redis import RedisStore


def _record(h: Mapping[str, str]) -> AlertRecord:
    resolved = h.get("resolved", "")
    return AlertRecord(
        key=h["key"],
        kind=h["kind"],
        status=AlertStatus(h["status"]),
        severity=AlertSeverity(h["severity"]),
        summary=h["summary"],
        workspace_id=h.get("ws") or None,
        details=json.loads(h.get("details") or "{}"),
        fired_at=int(h["fired"]) / 1000,
        resolved_at=int(resolved) / 1000 if resolved else None,
        one_shot=h.get("once") == "1",
    )


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisAlertStateStore(AlertStateStore):
    """Alert states in the same Redis, under the same ``key_prefix``, as ``store``."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._script: AsyncScript | None = None

    def _key(self, suffix: str) -> str:
        return self._store.global_key("{alerts}:" + suffix)

    async def _transition(self, key: str, args: list[Any]) -> AlertRecord | None:
        script = self._script
        if script is None:
            source = (resources.files("aragora.alerts") / "lua" / "transition.lua").read_text(
                encoding="utf-8"
            )
            script = self._script = self._store.client.register_script(source)
        keys = [self._key("a:" + key), self._key("firing")]
        reply = await self._store.call(lambda: script(keys=keys, args=args))
        return _record(_pairs(reply[1])) if int(reply[0]) else None

    async def fire(
        self, condition: Condition, *, observed_at: float, one_shot: bool, retention_s: float
    ) -> AlertRecord | None:
        return await self._transition(
            condition.key,
            [
                self._store.clock_offset_ms(),
                "firing",
                round(observed_at * 1000),
                condition.key,
                _ms(retention_s),
                condition.kind,
                condition.workspace_id or "",
                condition.severity.value,
                condition.summary,
                json.dumps(condition.details, separators=(",", ":"), default=str),
                "1" if one_shot else "0",
            ],
        )

    async def resolve(
        self, key: str, *, observed_at: float, retention_s: float
    ) -> AlertRecord | None:
        return await self._transition(
            key,
            [
                self._store.clock_offset_ms(),
                "resolved",
                round(observed_at * 1000),
                key,
                _ms(retention_s),
            ],
        )

    async def list_firing(self) -> list[AlertRecord]:
        client = self._store.client
        firing_key = self._key("firing")
        keys: list[str] = await self._store.call(lambda: client.zrange(firing_key, 0, -1))

        async def fetch() -> list[dict[str, str]]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._key("a:" + key))
            rows: list[dict[str, str]] = await pipe.execute()
            return rows

        rows = await self._store.call(fetch) if keys else []
        records = [_record(h) for h in rows if h and h.get("status") == "firing"]
        return sorted(records, key=lambda r: r.key)

    async def get(self, key: str) -> AlertRecord | None:
        state_key = self._key("a:" + key)
        h: dict[str, str] = await self._store.call(lambda: self._store.client.hgetall(state_key))
        if not h:
            return None
        expires = h.get("expires", "")
        if expires and int(expires) <= round(await self._store.now() * 1000):
            return None
        return _record(h)
