"""RateLimiter on every store: GCRA limits, atomic across instances, on the store clock."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from aragora.control_plane import ControlPlaneCoordinator, ValidationError
from aragora.policy import RateLimiter, create_rate_limiter
from aragora.policy.ratelimit import gcra
from aragora.store.redis import RedisStore
from aragora.store.sqlite import SqliteStore
from tests.conftest import Clock, CoordinatorFactory

WS = "acme"


@pytest.fixture
def limiter(cp: ControlPlaneCoordinator) -> RateLimiter:
    return create_rate_limiter(cp.store)


async def test_allows_the_limit_then_refuses_with_retry_after(
    limiter: RateLimiter, clock: Clock
) -> None:
    decisions = [await limiter.hit(WS, "submit", limit=5, window_s=10) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.retry_after_s == 0 and d.limit == 5 for d in decisions)
    assert decisions[-1].reset_after_s == pytest.approx(10.0, abs=0.5)

    refused = await limiter.hit(WS, "submit", limit=5, window_s=10)
    assert not refused.allowed and refused.remaining == 0
    # One hit comes back every window / limit = 2 s.
    assert refused.retry_after_s == pytest.approx(2.0, abs=0.5)
    assert not (await limiter.hit(WS, "submit", limit=5, window_s=10)).allowed

    clock.advance(refused.retry_after_s + 0.01)
    again = await limiter.hit(WS, "submit", limit=5, window_s=10)
    assert again.allowed and again.remaining == 0
    assert not (await limiter.hit(WS, "submit", limit=5, window_s=10)).allowed


async def test_the_full_burst_returns_after_one_window(limiter: RateLimiter, clock: Clock) -> None:
    for _ in range(3):
        assert (await limiter.hit(WS, "k", limit=3, window_s=60)).allowed
    assert not (await limiter.hit(WS, "k", limit=3, window_s=60)).allowed
    clock.advance(60.0)
    results = [(await limiter.hit(WS, "k", limit=3, window_s=60)).allowed for _ in range(4)]
    assert results == [True, True, True, False]


async def test_a_refused_hit_changes_nothing(limiter: RateLimiter, clock: Clock) -> None:
    assert (await limiter.hit(WS, "k", limit=2, window_s=10, cost=2)).allowed
    for _ in range(5):
        assert not (await limiter.hit(WS, "k", limit=2, window_s=10)).allowed
    clock.advance(5.01)  # one interval: exactly one hit back, not spent by the refusals
    assert (await limiter.hit(WS, "k", limit=2, window_s=10)).allowed


async def test_cost_counts_several_hits_and_zero_only_reports(limiter: RateLimiter) -> None:
    assert (await limiter.hit(WS, "k", limit=10, window_s=60, cost=0)).remaining == 10
    heavy = await limiter.hit(WS, "k", limit=10, window_s=60, cost=7)
    assert heavy.allowed and heavy.remaining == 3
    too_heavy = await limiter.hit(WS, "k", limit=10, window_s=60, cost=4)
    assert not too_heavy.allowed and too_heavy.remaining == 3
    assert (await limiter.hit(WS, "k", limit=10, window_s=60, cost=0)).remaining == 3
    assert (await limiter.hit(WS, "k", limit=10, window_s=60, cost=3)).allowed


async def test_limits_are_per_workspace_and_per_key(limiter: RateLimiter) -> None:
    assert (await limiter.hit(WS, "k", limit=1, window_s=60)).allowed
    assert not (await limiter.hit(WS, "k", limit=1, window_s=60)).allowed
    assert (await limiter.hit(WS, "other-key", limit=1, window_s=60)).allowed
    assert (await limiter.hit("other-ws", "k", limit=1, window_s=60)).allowed


async def test_many_instances_together_let_through_no_more_than_the_limit(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory
) -> None:
    coordinators = [cp, await cp_factory(), await cp_factory()]
    limiters = [create_rate_limiter(c.store) for c in coordinators]
    decisions = await asyncio.gather(
        *(limiters[n % 3].hit(WS, "submit", limit=10, window_s=60) for n in range(45))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_sub_second_windows_and_uneven_intervals(limiter: RateLimiter, clock: Clock) -> None:
    # 7 per 0.1 s: the interval is 14286 us, and all 7 still fit in one burst.
    results = [(await limiter.hit(WS, "k", limit=7, window_s=0.1)).allowed for _ in range(8)]
    assert results == [True] * 7 + [False]
    clock.advance(0.2)
    assert (await limiter.hit(WS, "k", limit=7, window_s=0.1)).remaining == 6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": ""}, "key"),
        ({"key": "k" * 201}, "key"),
        ({"limit": 0}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": -1}, "window_s"),
        ({"window_s": 32 * 86_400}, "window_s"),
        ({"cost": -1}, "cost"),
        ({"cost": 11}, "cost"),
        ({"workspace_id": "no spaces"}, "workspace_id"),
    ],
)
async def test_bad_arguments_are_rejected(
    limiter: RateLimiter, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"workspace_id": WS, "key": "k", "limit": 10, "window_s": 60}
    with pytest.raises(ValidationError) as caught:
        await limiter.hit(**{**args, **kwargs})
    assert caught.value.field == field


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_redis_keys_expire_once_they_no_longer_matter(
    cp: ControlPlaneCoordinator, limiter: RateLimiter
) -> None:
    store = cp.store
    assert isinstance(store, RedisStore)
    await limiter.hit(WS, "submit", limit=10, window_s=60, cost=3)
    ttl_ms = await store.client.pttl(store.workspace_key(WS, "rl:submit"))
    assert 17_000 < ttl_ms <= 18_001  # 3 hits of 6 s each


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_sqlite_rows_past_their_expiry_are_deleted_by_later_hits(
    cp: ControlPlaneCoordinator, limiter: RateLimiter, clock: Clock
) -> None:
    store = cp.store
    assert isinstance(store, SqliteStore)
    await limiter.hit(WS, "old", limit=10, window_s=60)
    clock.advance(7.0)
    await limiter.hit(WS, "new", limit=10, window_s=60)

    def keys(conn: sqlite3.Connection, _now: float) -> list[str]:
        return [row[0] for row in conn.execute("SELECT key FROM rate_limits ORDER BY key")]

    assert await store.snapshot(keys) == ["new"]


def test_gcra_in_integer_microseconds() -> None:
    first = gcra(None, 1_000, limit=3, window_us=30, cost=1)
    assert (first.allowed, first.remaining, first.new_tat_us) == (True, 2, 1_010)
    full = gcra(1_030, 1_000, limit=3, window_us=30, cost=1)
    assert (full.allowed, full.retry_after_us, full.reset_after_us) == (False, 10, 30)
    stale = gcra(500, 1_000, limit=3, window_us=30, cost=3)
    assert (stale.allowed, stale.remaining) == (True, 0)
