"""SAQ as a peer: jobs and results in the same Redis database.

Worker: one process, one ``saq.Worker`` with ``concurrency=100``; everything else
default. Producer: ``Queue.enqueue`` then ``Job.refresh(until_complete=...)``, which
waits on SAQ's pub/sub job updates.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.peers.base import ADD_ONE, Adapter, Gate, Settings, import_peer

CONCURRENCY = 100


async def _add_one(ctx: dict[str, Any], *, x: int) -> int:
    return x + 1


def _queue(settings: Settings) -> Any:
    return import_peer("saq").Queue.from_url(settings.redis_url, name=settings.namespace)


class SaqAdapter(Adapter):
    name = "saq"
    distribution = "saq"
    requires = ("saq",)
    worker_config = f"1 process, Worker(concurrency={CONCURRENCY})"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._queue: Any = None

    async def open(self) -> None:
        self._queue = _queue(self.settings)
        await self._queue.connect()

    async def submit(self, value: int) -> Any:
        return await self._queue.enqueue(ADD_ONE, x=value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        await handle.refresh(until_complete=timeout_s)
        if not handle.completed:
            raise TimeoutError
        if handle.status != "complete":
            raise RuntimeError(f"saq job ended {handle.status}: {handle.error}")
        return handle.result

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.disconnect()
            self._queue = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        worker = import_peer("saq").Worker(
            _queue(settings), functions=[(ADD_ONE, _add_one)], concurrency=CONCURRENCY
        )
        gate.wait_for_go()
        asyncio.run(worker.start())
