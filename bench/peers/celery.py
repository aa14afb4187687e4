"""Celery as a peer: Redis broker (kombu) and Redis result backend on the same database.

Worker: one process, ``celery worker --pool=solo --concurrency=1`` (tasks run one at a
time in the worker's main thread; no prefork children), started through
``Celery.worker_main``; ``--without-gossip --without-mingle --without-heartbeat`` because
there is no other worker to talk to (mingle would otherwise wait for replies at start).
Everything else is celery's default (prefetch multiplier 4, early acks, JSON).
Producer: ``apply_async`` then ``AsyncResult.get(timeout=...)``, which waits on the
backend's pub/sub channel for the task.

The producer keeps every ``AsyncResult`` it made until ``close``: in celery before 5.7
the cyclic garbage collector can run ``AsyncResult.__del__`` in the middle of a pub/sub
command, and its UNSUBSCRIBE re-enters redis-py's pub/sub lock and hangs the client
for good (celery issue 10477; the fix needs celery 5.7, hence kombu 5.7 and redis-py
6.1 or later, which arq does not allow yet). Without a finaliser running mid-command
the measurement is not affected; ``close`` drops them all at once, between commands.
"""

from __future__ import annotations

import gc
from typing import Any

from bench.peers.base import ADD_ONE, Adapter, Gate, Settings, add_one, import_peer


def _app(settings: Settings) -> Any:
    celery = import_peer("celery")
    app = celery.Celery(f"bench-{settings.namespace}", broker=settings.redis_url)
    app.conf.update(
        result_backend=settings.redis_url,
        task_default_queue=settings.namespace,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=ADD_ONE)(add_one)
    return app


class CeleryAdapter(Adapter):
    name = "celery"
    distribution = "celery"
    requires = ("celery",)
    worker_config = (
        "1 process, --pool=solo --concurrency=1 (one task at a time), "
        "without gossip/mingle/heartbeat"
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._app: Any = None
        self._timeout_error: type[BaseException] = TimeoutError
        self._handles: list[Any] = []

    async def open(self) -> None:
        self._app = _app(self.settings)
        self._timeout_error = import_peer("celery.exceptions").TimeoutError

    async def submit(self, value: int) -> Any:
        handle = self._app.tasks[ADD_ONE].apply_async((value,))
        self._handles.append(handle)
        return handle

    async def result(self, handle: Any, timeout_s: float) -> Any:
        try:
            return handle.get(timeout=timeout_s)
        except self._timeout_error:
            raise TimeoutError from None

    async def close(self) -> None:
        self._handles.clear()
        gc.collect()  # finalise them now, while no pub/sub command is in flight
        if self._app is not None:
            self._app.close()
            self._app = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        app = _app(settings)
        gate.wait_for_go()
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--queues={settings.namespace}",
            ]
        )
