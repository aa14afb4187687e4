"""taskiq as a peer, with taskiq-redis: ``RedisStreamBroker`` (the broker of taskiq-redis'
own example; consumer group with acknowledgements) and ``RedisAsyncResultBackend`` on
the same database.

Worker: one process running taskiq's default async receiver (``run_receiver_task``:
``max_async_tasks=100``), what ``taskiq worker --workers 1`` runs per process.
Producer: ``kiq`` then ``wait_result(check_interval=1 ms, timeout=...)`` (taskiq's
client polls the result backend; 1 ms keeps that out of the figures).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.peers.base import (
    ADD_ONE,
    RESULT_POLL_S,
    Adapter,
    Gate,
    Settings,
    add_one_async,
    import_peer,
)


def _broker(settings: Settings) -> Any:
    taskiq_redis = import_peer("taskiq_redis")
    backend = taskiq_redis.RedisAsyncResultBackend(redis_url=settings.redis_url)
    broker = taskiq_redis.RedisStreamBroker(
        url=settings.redis_url,
        queue_name=settings.namespace,
        consumer_group_name=settings.namespace,
    ).with_result_backend(backend)
    broker.register_task(add_one_async, task_name=ADD_ONE)
    return broker


class TaskiqAdapter(Adapter):
    name = "taskiq"
    distribution = "taskiq"
    requires = ("taskiq", "taskiq_redis")
    worker_config = "1 process, default async receiver (max_async_tasks=100), stream broker"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._broker: Any = None
        self._timeout_error: type[BaseException] = TimeoutError

    async def open(self) -> None:
        self._broker = _broker(self.settings)
        self._timeout_error = import_peer("taskiq.exceptions").TaskiqResultTimeoutError
        await self._broker.startup()

    async def submit(self, value: int) -> Any:
        return await self._broker.find_task(ADD_ONE).kiq(value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        try:
            res = await handle.wait_result(check_interval=RESULT_POLL_S, timeout=timeout_s)
        except self._timeout_error:
            raise TimeoutError from None
        if res.is_err:
            raise RuntimeError(f"taskiq task failed: {res.error}")
        return res.return_value

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        broker = _broker(settings)
        run_receiver_task = import_peer("taskiq.api").run_receiver_task
        gate.wait_for_go()

        async def main() -> None:
            await broker.startup()
            await run_receiver_task(broker)

        asyncio.run(main())
