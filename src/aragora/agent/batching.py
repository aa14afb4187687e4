"""``Batcher``: group many small writes (e.g. task completions) into few round trips.

Callers hand items over one at a time and get a future of each item's own outcome. One
flush runs at a time: while it is on the wire, new items gather, and the next flush
takes them all (up to ``max_items``) as soon as it returned. An item that arrives while
nothing is in flight waits at most ``linger_s`` for company. So a busy caller sends
full batches back to back and an idle one adds at most ``linger_s`` of latency; with
``linger_s = 0`` a lone item is sent at once.

``flush`` gets a list of items and returns one outcome per item, in order (an outcome
may itself be an exception object, the item's own refusal); an exception raised by
``flush`` fails every item of that batch. Each item stays its own write on the other
side (a completion is still fenced by its own lease token); only the transport is
shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_ITEMS = 100
DEFAULT_LINGER_S = 0.0


class Batcher(Generic[T, R]):
    """Batch items for ``flush``; use as ``async with Batcher(flush) as batcher``."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be 1 or more")
        if linger_s < 0:
            raise ValueError("linger_s must be 0 or more")
        self._flush = flush
        self.max_items = max_items
        self.linger_s = linger_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        """Whether ``aclose`` was called: no new items are taken."""
        return self._closing

    @property
    def pending(self) -> int:
        """Items handed over and not yet sent."""
        return len(self._pending)

    def start(self) -> None:
        """Start the background flusher (``__aenter__`` does this)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="aragora-batcher")

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future resolves to its outcome once its batch returned."""
        if self._closing:
            raise RuntimeError("the batcher is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        if len(self._pending) >= self.max_items:
            self._full.set()
        return future

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its outcome."""
        return await self.submit_nowait(item)

    async def aclose(self) -> None:
        """Send everything still queued, then stop. Idempotent."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._runner is not None:
            await asyncio.shield(self._runner)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        backlog = False  # items gathered while the previous batch was on the wire
        while True:
            await self._wake.wait()
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                continue
            lonely = not backlog and len(self._pending) < self.max_items
            if self.linger_s > 0 and lonely and not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger_s):
                        await self._full.wait()
            batch = self._pending[: self.max_items]
            del self._pending[: self.max_items]
            if len(self._pending) < self.max_items:
                self._full.clear()
            if not self._pending and not self._closing:
                self._wake.clear()
            await self._send(batch)
            backlog = bool(self._pending)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._flush([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"flush returned {len(outcomes)} outcomes for {len(batch)}")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)
