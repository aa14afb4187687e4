"""A small in-process cache whose entries expire after a fixed time.

Hot reads (token → principal, workspace quotas, ...) are answered from memory for at
most ``ttl_s`` seconds; the store stays the source of truth. Writers invalidate entries
explicitly (see :mod:`aragora.cache.bus`); the TTL bounds how long an entry can outlive
a missed invalidation.

A load that started before an invalidation must not put its (possibly stale) result
back afterwards, so every fill carries the cache's *generation*, taken before the read
(:meth:`TTLCache.generation`); any invalidation moves the generation on and a fill with
an older one is dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Generic, TypeVar

DEFAULT_MAX_ENTRIES: Final = 10_000

V = TypeVar("V")


class TTLCache(Generic[V]):
    """String keys to values, each kept for at most ``ttl_s`` seconds.

    ``ttl_s`` 0 disables the cache (every :meth:`get` misses, :meth:`put` keeps
    nothing). At most ``max_entries`` are kept; the least recently used goes first.
    ``monotonic`` is injectable so tests move time instead of sleeping.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s must not be negative and max_entries must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()
        self._generation = 0

    @property
    def enabled(self) -> bool:
        """Whether entries are kept at all (``ttl_s`` above 0)."""
        return self.ttl_s > 0

    @property
    def generation(self) -> int:
        """Moves on at every invalidation; take it before reading the store for a fill."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        """The live value under ``key``, or ``None`` (missing or expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at_s = entry
        if self._monotonic() >= expires_at_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V, *, generation: int, ttl_s: float | None = None) -> bool:
        """Keep ``value`` under ``key`` for ``ttl_s`` (at most the cache's TTL).

        Nothing is kept (and False returned) when the cache is disabled, ``ttl_s`` is not
        positive, or an invalidation happened since ``generation`` was taken.
        """
        lifetime_s = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if lifetime_s <= 0 or generation != self._generation:
            return False
        self._entries[key] = (value, self._monotonic() + lifetime_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def invalidate(self, key: str) -> None:
        """Drop ``key`` (and make fills begun earlier land nowhere)."""
        self._generation += 1
        self._entries.pop(key, None)

    def invalidate_prefix(self, prefix: str) -> None:
        """Drop every key that starts with ``prefix``."""
        self._generation += 1
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def invalidate_where(self, predicate: Callable[[V], bool]) -> None:
        """Drop every entry whose value satisfies ``predicate`` (a scan: for rare writes)."""
        self._generation += 1
        for key in [k for k, (v, _) in self._entries.items() if predicate(v)]:
            del self._entries[key]

    def clear(self) -> None:
        """Drop everything, e.g. after invalidations may have been missed."""
        self._generation += 1
        self._entries.clear()
