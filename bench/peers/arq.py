"""arq as a peer: jobs and results in the same Redis database.

Worker: one process, one ``arq.worker.Worker`` with ``max_jobs=100`` (up to 100 jobs in
flight on its event loop) and ``poll_delay=0.01`` s; everything else default. arq finds
new jobs by polling its queue; with the default ``poll_delay=0.5`` s every W2 sample
waits out one poll (p50 about 500 ms: the worker sleeps right after each job) and W2
alone would outlast the workload timeout, so arq runs with the setting its users pick
for latency: 10 ms, half our SQLite store's change poll.
Producer: ``ArqRedis.enqueue_job`` then ``Job.result(timeout=..., poll_delay=1 ms)``
(arq's client polls for results; 1 ms keeps that out of the figures).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.peers.base import ADD_ONE, RESULT_POLL_S, Adapter, Gate, Settings, import_peer

MAX_JOBS = 100
POLL_DELAY_S = 0.01


async def _add_one(ctx: dict[str, Any], x: int) -> int:
    return x + 1


class ArqAdapter(Adapter):
    name = "arq"
    distribution = "arq"
    requires = ("arq",)
    worker_config = (
        f"1 process, Worker(max_jobs={MAX_JOBS}, poll_delay={POLL_DELAY_S:g}) (default 0.5)"
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._pool: Any = None

    async def open(self) -> None:
        arq = import_peer("arq")
        redis_settings = arq.connections.RedisSettings.from_dsn(self.settings.redis_url)
        self._pool = await arq.create_pool(
            redis_settings, default_queue_name=self.settings.namespace
        )

    async def submit(self, value: int) -> Any:
        return await self._pool.enqueue_job(ADD_ONE, value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        return await handle.result(timeout=timeout_s, poll_delay=RESULT_POLL_S)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        arq = import_peer("arq")
        worker_mod = import_peer("arq.worker")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = worker_mod.Worker(
            functions=[worker_mod.func(_add_one, name=ADD_ONE)],
            redis_settings=arq.connections.RedisSettings.from_dsn(settings.redis_url),
            queue_name=settings.namespace,
            max_jobs=MAX_JOBS,
            poll_delay=POLL_DELAY_S,
            handle_signals=False,
        )
        gate.wait_for_go()
        worker.run()
