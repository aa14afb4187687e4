"""RQ as a peer: queue and results in the same Redis database.

Worker: one ``rq.Worker`` (what ``rq worker`` runs): it forks a work horse process per
job, rq's default and its isolation model. Producer: ``Queue.enqueue`` then
``Job.latest_result(timeout=...)``, which blocks on the job's result stream (XREAD).
"""

from __future__ import annotations

import math
from typing import Any

from bench.peers.base import Adapter, Gate, Settings, import_peer

FUNCTION = "bench.peers.base.add_one"


class RqAdapter(Adapter):
    name = "rq"
    distribution = "rq"
    requires = ("rq",)
    worker_config = "1 rq.Worker process (default: forks a work horse per job)"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._conn: Any = None
        self._queue: Any = None

    async def open(self) -> None:
        self._conn = import_peer("redis").Redis.from_url(self.settings.redis_url)
        self._queue = import_peer("rq").Queue(self.settings.namespace, connection=self._conn)

    async def submit(self, value: int) -> Any:
        return self._queue.enqueue(FUNCTION, value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        # rq takes whole seconds; 0 would mean "do not block".
        result = handle.latest_result(timeout=max(1, math.ceil(timeout_s)))
        if result is None:
            raise TimeoutError
        if result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"rq job failed: {result.exc_string}")
        return result.return_value

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        rq = import_peer("rq")
        conn = import_peer("redis").Redis.from_url(settings.redis_url)
        worker = rq.Worker([rq.Queue(settings.namespace, connection=conn)], connection=conn)
        gate.wait_for_go()
        worker.work(logging_level="WARNING")
