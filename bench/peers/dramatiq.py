"""Dramatiq as a peer: ``RedisBroker`` and the ``Results`` middleware with its Redis
backend on the same database.

Worker: one process, one ``dramatiq.Worker`` with its default 8 worker threads (what
``dramatiq --processes 1`` runs); default middleware. Producer: ``Actor.send`` then
``Message.get_result(block=True, timeout=...)``, which blocks on the result key
(BRPOPLPUSH; dramatiq rounds the timeout down to whole seconds).
"""

from __future__ import annotations

import threading
from typing import Any

from bench.peers.base import ADD_ONE, Adapter, Gate, Settings, add_one, import_peer

WORKER_THREADS = 8


def _broker(settings: Settings) -> tuple[Any, Any, Any]:
    dramatiq = import_peer("dramatiq")
    broker = import_peer("dramatiq.brokers.redis").RedisBroker(
        url=settings.redis_url, namespace=settings.namespace
    )
    backend = import_peer("dramatiq.results.backends.redis").RedisBackend(
        url=settings.redis_url, namespace=settings.namespace + "-results"
    )
    broker.add_middleware(import_peer("dramatiq.results").Results(backend=backend))
    actor = dramatiq.actor(add_one, actor_name=ADD_ONE, broker=broker, store_results=True)
    return broker, backend, actor


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    distribution = "dramatiq"
    requires = ("dramatiq",)
    worker_config = f"1 process, Worker(worker_threads={WORKER_THREADS}) (default)"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._broker: Any = None
        self._backend: Any = None
        self._actor: Any = None
        self._timeout_error: type[BaseException] = TimeoutError

    async def open(self) -> None:
        self._broker, self._backend, self._actor = _broker(self.settings)
        self._timeout_error = import_peer("dramatiq.results").ResultTimeout

    async def submit(self, value: int) -> Any:
        return self._actor.send(value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        try:
            return handle.get_result(
                backend=self._backend, block=True, timeout=max(1000, int(timeout_s * 1000))
            )
        except self._timeout_error:
            raise TimeoutError from None

    async def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        broker, _, _ = _broker(settings)
        worker = import_peer("dramatiq").Worker(broker, worker_threads=WORKER_THREADS)
        gate.wait_for_go()
        worker.start()
        threading.Event().wait()  # the gate ends the process when the parent says stop
