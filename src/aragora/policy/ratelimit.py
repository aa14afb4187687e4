"""Rate limits on the store: ``RateLimiter.hit`` is one atomic step on the store clock.

Algorithm: GCRA (the generic cell rate algorithm, as in redis-cell). A limit of
``limit`` hits per ``window_s`` lets one hit through every ``window_s / limit``
seconds on average and up to ``limit`` in a burst; the only state is one timestamp per
key, the *theoretical arrival time* (TAT). A hit of cost ``c`` moves the TAT
``c * interval`` ahead; it is refused when that would put the TAT more than one window
ahead of now. Unlike a fixed window there is no boundary at which twice the limit gets
through, and unlike a sliding log the state does not grow with the limit.

All arithmetic is integer microseconds, with ``interval = ceil(window / limit)``, so
Lua (doubles) and Python agree exactly. Because the whole decision is one Lua script
or one SQL transaction using the store's clock, any number of instances sharing a
store together let through no more than the limit.

Keys are scoped by workspace (Redis: ``<prefix>{<ws>}:rl:<key>``, in the workspace's
hash slot) and clean themselves up: a Redis key expires once its TAT has passed; SQLite
rows past their expiry are deleted by later hits.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aragora.control_plane.errors import ValidationError
from aragora.control_plane.models import validate_workspace_id

if TYPE_CHECKING:
    from aragora.store import Store

MAX_KEY_CHARS = 200
MAX_WINDOW_S = 31 * 86_400
MAX_LIMIT = 1_000_000_000
_US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one hit.

    ``remaining`` is how many more unit hits would pass right now; ``retry_after_s``
    how long until this hit would pass (0 when allowed); ``reset_after_s`` how long
    until the limit is back to its full burst.
    """

    allowed: bool
    remaining: int
    retry_after_s: float
    reset_after_s: float
    limit: int


@dataclass(frozen=True, slots=True)
class GcraStep:
    """One GCRA step in microseconds; ``new_tat_us`` is what to store when allowed."""

    allowed: bool
    remaining: int
    retry_after_us: int
    reset_after_us: int
    new_tat_us: int


def gcra(tat_us: int | None, now_us: int, limit: int, window_us: int, cost: int) -> GcraStep:
    """The pure rule the SQLite backend applies and ``lua/rate_limit.lua`` mirrors."""
    interval = -(-window_us // limit)
    capacity = interval * limit
    tat = max(tat_us or 0, now_us)
    new_tat = tat + cost * interval
    if new_tat - now_us > capacity:
        remaining = (now_us + capacity - tat) // interval
        return GcraStep(False, remaining, new_tat - now_us - capacity, tat - now_us, tat)
    remaining = (now_us + capacity - new_tat) // interval
    return GcraStep(True, remaining, 0, new_tat - now_us, new_tat)


class RateLimiter(abc.ABC):
    """Per-workspace rate limits shared by every instance on one store."""

    async def hit(
        self, workspace_id: str, key: str, limit: int, window_s: float, cost: int = 1
    ) -> RateDecision:
        """Count one hit of ``cost`` against ``limit`` hits per ``window_s`` seconds.

        ``key`` names the limit inside the workspace (``"submit"``,
        ``"submit:token:<id>"``). A refused hit changes nothing. ``cost=0`` only reports.
        """
        validate_workspace_id(workspace_id)
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise ValidationError("key", f"must be a non-empty string of at most {MAX_KEY_CHARS}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
        if isinstance(window_s, bool) or not isinstance(window_s, int | float):
            raise ValidationError("window_s", "must be a number of seconds")
        window_us = round(window_s * _US_PER_S)
        if not 1 <= window_us <= MAX_WINDOW_S * _US_PER_S:
            raise ValidationError("window_s", f"must be from 1 us to {MAX_WINDOW_S} s")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= limit:
            raise ValidationError("cost", "must be an integer from 0 to the limit")
        step = await self._hit(workspace_id, key, limit, window_us, cost)
        return RateDecision(
            allowed=step.allowed,
            remaining=step.remaining,
            retry_after_s=step.retry_after_us / _US_PER_S,
            reset_after_s=step.reset_after_us / _US_PER_S,
            limit=limit,
        )

    @abc.abstractmethod
    async def _hit(
        self, workspace_id: str, key: str, limit: int, window_us: int, cost: int
    ) -> GcraStep:
        """Apply ``gcra`` atomically on the store clock (validated arguments)."""


def create_rate_limiter(store: Store) -> RateLimiter:
    """The rate limiter on the same backend (and connection) as ``store``."""
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

    if isinstance(store, RedisStore):
        from aragora.policy.redis_store import RedisRateLimiter

        return RedisRateLimiter(store)
    if isinstance(store, SqliteStore):
        from aragora.policy.sqlite_store import SqliteRateLimiter

        return SqliteRateLimiter(store)
    raise TypeError(f"no rate limiter for {type(store).__name__}")
