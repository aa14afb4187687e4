"""TTLCache: entries expire, invalidations drop them, and a fill that raced an
invalidation never puts a stale value back."""

from __future__ import annotations

import pytest

from aragora.cache import TTLCache


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_an_entry_lives_for_the_ttl_and_no_longer() -> None:
    ticks = Ticks()
    cache: TTLCache[str] = TTLCache(2.0, monotonic=ticks)
    assert cache.put("a", "one", generation=cache.generation)

    ticks.now_s += 1.99
    assert cache.get("a") == "one"
    ticks.now_s += 0.01
    assert cache.get("a") is None
    assert len(cache) == 0


def test_a_shorter_lifetime_than_the_ttl_wins_but_never_a_longer_one() -> None:
    ticks = Ticks()
    cache: TTLCache[str] = TTLCache(2.0, monotonic=ticks)
    cache.put("short", "x", generation=cache.generation, ttl_s=0.5)
    cache.put("long", "y", generation=cache.generation, ttl_s=60.0)
    assert not cache.put("gone", "z", generation=cache.generation, ttl_s=0.0)

    ticks.now_s += 0.5
    assert cache.get("short") is None
    assert cache.get("long") == "y"
    ticks.now_s += 1.5
    assert cache.get("long") is None
    assert cache.get("gone") is None


def test_ttl_zero_keeps_nothing() -> None:
    cache: TTLCache[str] = TTLCache(0.0)
    assert not cache.enabled
    assert not cache.put("a", "one", generation=cache.generation)
    assert cache.get("a") is None


def test_invalidate_drops_one_key_prefix_drops_a_family_where_drops_by_value() -> None:
    cache: TTLCache[str] = TTLCache(60.0)
    for key in ("ws:a", "ws:b", "other"):
        cache.put(key, key.upper(), generation=cache.generation)

    cache.invalidate("ws:a")
    assert [cache.get(k) for k in ("ws:a", "ws:b", "other")] == [None, "WS:B", "OTHER"]
    cache.invalidate_prefix("ws:")
    assert [cache.get(k) for k in ("ws:b", "other")] == [None, "OTHER"]
    cache.invalidate_where(lambda value: value == "OTHER")
    assert len(cache) == 0


def test_a_fill_that_began_before_an_invalidation_is_dropped() -> None:
    cache: TTLCache[str] = TTLCache(60.0)
    before_read = cache.generation
    cache.invalidate("a")  # a write committed while the store was being read

    assert not cache.put("a", "stale", generation=before_read)
    assert cache.get("a") is None
    assert cache.put("a", "fresh", generation=cache.generation)
    assert cache.get("a") == "fresh"


def test_clear_drops_everything_and_the_oldest_goes_first_when_full() -> None:
    cache: TTLCache[int] = TTLCache(60.0, max_entries=2)
    cache.put("a", 1, generation=cache.generation)
    cache.put("b", 2, generation=cache.generation)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3, generation=cache.generation)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)

    cache.clear()
    assert len(cache) == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        TTLCache(-1.0)
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(1.0, max_entries=0)
