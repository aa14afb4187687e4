"""Huey as a peer: ``RedisHuey`` (queue and results in the same database).

Worker: one consumer process with one worker thread (``huey_consumer -w 1 -k thread``,
huey's default), blocking dequeue (BRPOP, huey's default for Redis). Producer and
worker use ``notify_result=True``, huey's documented option to wake a waiting
``Result.get(blocking=True)`` with BLPOP instead of polling with back-off.
"""

from __future__ import annotations

from typing import Any

from bench.peers.base import ADD_ONE, Adapter, Gate, Settings, add_one, import_peer


def _huey(settings: Settings) -> tuple[Any, Any]:
    huey = import_peer("huey").RedisHuey(
        name=settings.namespace, url=settings.redis_url, notify_result=True
    )
    task = huey.task(name=ADD_ONE)(add_one)
    return huey, task


class HueyAdapter(Adapter):
    name = "huey"
    distribution = "huey"
    requires = ("huey",)
    worker_config = "1 consumer process, 1 worker thread (default), notify_result=True"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._huey: Any = None
        self._task: Any = None
        self._timeout_error: type[BaseException] = TimeoutError

    async def open(self) -> None:
        self._huey, self._task = _huey(self.settings)
        self._timeout_error = import_peer("huey.exceptions").ResultTimeout

    async def submit(self, value: int) -> Any:
        return self._task(value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        try:
            return handle.get(blocking=True, timeout=timeout_s)
        except self._timeout_error:
            raise TimeoutError from None

    async def close(self) -> None:
        self._huey = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        huey, _ = _huey(settings)
        consumer = huey.create_consumer(workers=1, worker_type="thread")
        gate.wait_for_go()
        consumer.run()
