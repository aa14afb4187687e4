"""``Batcher``: completions share round trips, each keeps its own outcome and fencing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from aragora.agent.batching import Batcher
from aragora.control_plane import ControlPlaneCoordinator, ControlPlaneError, LeaseLostError

WAIT_S = 10.0


class GatedFlush:
    """A flush that records each batch and waits for the test to let it return."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> Sequence[int]:
        self.batches.append(list(items))
        self.entered.set()
        await self.release.wait()
        return [item * 10 for item in items]


async def test_a_lone_item_is_sent_at_once_and_gets_its_own_outcome() -> None:
    flush = GatedFlush()
    flush.release.set()
    async with Batcher(flush) as batcher:
        assert await asyncio.wait_for(batcher.submit(7), WAIT_S) == 70
    assert flush.batches == [[7]]


async def test_items_arriving_while_a_batch_is_on_the_wire_go_together_next() -> None:
    flush = GatedFlush()
    async with Batcher(flush, max_items=3) as batcher:
        first = batcher.submit_nowait(1)
        await asyncio.wait_for(flush.entered.wait(), WAIT_S)
        later = [batcher.submit_nowait(i) for i in range(2, 7)]
        flush.release.set()
        results = await asyncio.wait_for(asyncio.gather(first, *later), WAIT_S)
    assert results == [10, 20, 30, 40, 50, 60]
    assert flush.batches == [[1], [2, 3, 4], [5, 6]]


async def test_a_linger_gathers_items_that_arrive_soon_after() -> None:
    flush = GatedFlush()
    flush.release.set()
    async with Batcher(flush, linger_s=WAIT_S, max_items=2) as batcher:
        both = asyncio.gather(batcher.submit(1), batcher.submit(2))
        assert list(await asyncio.wait_for(both, WAIT_S)) == [10, 20]
    assert flush.batches == [[1, 2]]


async def test_a_failed_flush_fails_its_batch_only() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("server away")
        return items

    async with Batcher(flaky) as batcher:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(batcher.submit(1), WAIT_S)
        assert await asyncio.wait_for(batcher.submit(2), WAIT_S) == 2


async def test_closing_sends_what_is_still_queued() -> None:
    flush = GatedFlush()
    flush.release.set()
    batcher: Batcher[int, int] = Batcher(flush)
    batcher.start()
    futures = [batcher.submit_nowait(i) for i in range(3)]
    await batcher.aclose()
    assert [f.result() for f in futures] == [0, 10, 20]
    with pytest.raises(RuntimeError):
        batcher.submit_nowait(4)


def test_bad_settings_are_refused() -> None:
    async def flush(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="max_items"):
        Batcher(flush, max_items=0)
    with pytest.raises(ValueError, match="linger_s"):
        Batcher(flush, linger_s=-1)


@pytest.mark.parametrize("store_kind", ["sqlite", "redis"], indirect=True)
async def test_batched_completions_are_each_fenced_by_their_own_lease(
    cp: ControlPlaneCoordinator,
) -> None:
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=3)
    ids = [await cp.submit_task("t", i) for i in range(3)]
    tasks = await cp.claim_tasks("a", max_tasks=3)
    leases = {t.id: t.lease_token or "" for t in tasks}
    leases[ids[1]] = "stale-token"

    async def flush(items: list[tuple[str, Any, str]]) -> list[Any]:
        return list(await cp.complete_tasks(items))

    async with Batcher(flush) as batcher:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit((i, f"r{i}", leases[i])) for i in ids)), WAIT_S
        )
    assert isinstance(outcomes[1], LeaseLostError)
    assert not any(isinstance(o, ControlPlaneError) for o in (outcomes[0], outcomes[2]))
    assert [(await cp.get_task(i)).status.value for i in ids] == [
        "completed",
        "running",
        "completed",
    ]
