"""Our control plane as a system under comparison, on the Redis or the SQLite store.

Producer (the benchmark process): one ``ControlPlaneCoordinator`` without a reaper (a
client submits and waits, it does not maintain the store). ``submit`` is
``submit_task("add_one", value)``; ``result`` is ``wait_for_result(task_id, timeout)``,
which on Redis wakes on the store's pub/sub notification and on SQLite on the store's
``PRAGMA data_version`` poll (every 20 ms while anyone waits).

Results: ``result(handle)`` returns at once when the result was already read; else it
reads the task and the tasks submitted right after it in one batched read
(``get_tasks``, a pipeline of reads on Redis; the window doubles up to
``RESULT_WINDOW`` while every task in it has finished and shrinks when the producer has
caught up with the worker) and keeps the results it finds; a task not finished yet is
waited for with ``wait_for_result``. The last task submitted (every W2 sample) goes to
``wait_for_result`` directly.

Worker (a separate process): one coordinator with its reaper, as an agent process would
run it on the library, on the event loop the Agent SDK uses (uvloop where installed).
One agent registers with ``max_concurrent_tasks = slots`` and runs ``slots`` claim
loops, each ``claimer.claim(1, wait_s=1)`` (``cp.claimer(agent)``, which keeps
listening between claims) then ``complete_task(id, payload + 1, lease_token=...)``, and
a heartbeat every ``heartbeat_interval``. With ``slots = 1`` this is the plain agent
loop: one task at a time, two store transitions per task. With ``batch = k > 1`` the
worker runs the way the Agent SDK does: the agent (``max_concurrent_tasks = 2k``)
claims with ``claimer.claim(min(k, free slots), wait_s=1)`` whenever it has free slots,
and each finished task's completion goes to a ``Batcher`` that sends
``complete_tasks`` of up to k items (one round trip; each item still its own atomic,
lease-checked transition) as soon as the previous batch returned (a lone completion is
sent at once). So one batch is being completed while the next is claimed.

Mix mode (workload W5): several agents with their own capabilities, one slot each, in
the same worker process and coordinator; each result also names the agent that ran the
task and the agent's claim counter, so the order of every agent's claims is known.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aragora.agent.batching import Batcher
from aragora.agent.worker import event_loop_factory
from aragora.control_plane import (
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    ControlPlaneError,
    TaskPriority,
    TaskStatus,
)
from bench.peers.base import ADD_ONE, Adapter, Gate, Settings, import_peer

CLAIM_WAIT_S = 1.0
RESULT_WINDOW = 512
"""Most tasks read in one batched result read."""
WORKER_AGENT = "bench-worker"
MODEL = "bench"


def mix_options(agents: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """``Settings.options`` entries that put the worker in mix mode with these agents."""
    return {"mode": "mix", "agents": agents}


def config_for(settings: Settings) -> ControlPlaneConfig:
    """The store chosen by ``settings.options["store"]``: ``redis`` under the settings'
    database and a key prefix of its own, or ``sqlite`` in ``options["sqlite_path"]``."""
    store = settings.options["store"]
    if store == "redis":
        return ControlPlaneConfig(redis_url=settings.redis_url, key_prefix=settings.namespace + ":")
    if store == "sqlite":
        return ControlPlaneConfig(store_url=f"sqlite:///{settings.options['sqlite_path']}")
    raise ValueError(f"unknown store {store!r}")


class AragoraAdapter(Adapter):
    """Producer and worker on the public ``ControlPlaneCoordinator`` API."""

    distribution = "aragora-control-plane"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._cp: ControlPlaneCoordinator | None = None
        self._submitted: list[str] = []
        self._position: dict[str, int] = {}
        self._results: dict[str, Any] = {}
        self._window = 2

    @classmethod
    def describe(cls, slots: int, batch: int = 1) -> str:
        if batch > 1:
            return (
                f"1 process, 1 agent (max_concurrent_tasks={2 * batch}): claimer.claim("
                f"<={batch}, wait_s={CLAIM_WAIT_S:g}) while slots are free, "
                f"completions batched (<={batch} per complete_tasks)"
            )
        if slots == 1:
            return (
                f"1 process, 1 agent, 1 claim loop: claimer.claim(1, wait_s={CLAIM_WAIT_S:g}) "
                "+ complete_task"
            )
        return (
            f"1 process, 1 agent (max_concurrent_tasks={slots}), {slots} concurrent "
            f"claim loops: claimer.claim(1, wait_s={CLAIM_WAIT_S:g}) + complete_task"
        )

    @classmethod
    def describe_worker(cls, options: dict[str, Any]) -> str:
        return cls.describe(int(options.get("slots", 1)), int(options.get("batch", 1)))

    @property
    def coordinator(self) -> ControlPlaneCoordinator:
        if self._cp is None:
            raise RuntimeError("producer is not open")
        return self._cp

    async def open(self) -> None:
        self._cp = ControlPlaneCoordinator(config_for(self.settings), run_reaper=False)
        await self._cp.start()

    async def submit(self, value: int) -> str:
        task_id = await self.coordinator.submit_task(ADD_ONE, value)
        self._position[task_id] = len(self._submitted)
        self._submitted.append(task_id)
        return task_id

    async def submit_mixed(self, value: int, capabilities: tuple[str, ...], rank: int) -> str:
        """Queue a W5 task with required capabilities and a priority (0 = CRITICAL)."""
        return await self.coordinator.submit_task(
            ADD_ONE, value, capabilities, TaskPriority.from_rank(rank)
        )

    async def result(self, handle: Any, timeout_s: float) -> Any:
        if handle in self._results:
            return self._results.pop(handle)
        start = self._position.get(handle)
        if start is not None and start + 1 < len(self._submitted):
            await self._read_ahead(start)
            if handle in self._results:
                return self._results.pop(handle)
        return await self.coordinator.wait_for_result(handle, timeout_s)

    async def _read_ahead(self, start: int) -> None:
        """Read the window of tasks submitted from ``start`` on in one batched read and
        keep the results of those completed."""
        ids = [
            task_id
            for task_id in self._submitted[start : start + self._window]
            if task_id not in self._results
        ]
        finished = 0
        for task_id, task in zip(ids, await self.coordinator.get_tasks(ids), strict=True):
            if task is not None and task.status is TaskStatus.COMPLETED:
                self._results[task_id] = task.result
                finished += 1
        caught_up = finished < len(ids)
        self._window = 2 if caught_up else min(self._window * 2, RESULT_WINDOW)

    async def close(self) -> None:
        if self._cp is not None:
            await self._cp.close()
            self._cp = None

    # -- worker process --------------------------------------------------------------
    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        # The event loop the Agent SDK runs on (uvloop where installed).
        loop_factory = event_loop_factory() or asyncio.new_event_loop
        loop = loop_factory()
        stop = asyncio.Event()
        profile_path: str | None = settings.options.get("profile_path")

        def on_stop() -> None:
            loop.call_soon_threadsafe(stop.set)

        gate.wait_for_go(on_stop)
        profiler: Any = None
        if profile_path:
            profiler = import_peer("pyinstrument").Profiler(async_mode="disabled")
            profiler.start()
        try:
            loop.run_until_complete(_worker_main(settings, stop))
        finally:
            loop.close()
            if profiler is not None and profile_path is not None:
                profiler.stop()
                Path(profile_path).write_text(profiler.output_text(unicode=True, color=False))


class AragoraRedis(AragoraAdapter):
    """Options: ``store="redis"``; ``slots``, ``batch``, ``mode`` as above."""

    name = "aragora-redis"
    worker_config = AragoraAdapter.describe(1)


class AragoraSqlite(AragoraAdapter):
    """Options: ``store="sqlite"``, ``sqlite_path``; ``slots``, ``batch``, ``mode`` as above."""

    name = "aragora-sqlite"
    worker_config = AragoraAdapter.describe(1)


async def _heartbeats(cp: ControlPlaneCoordinator, agents: list[str]) -> None:
    while True:
        await asyncio.sleep(cp.config.heartbeat_interval)
        for agent in agents:
            await cp.heartbeat(agent)


async def _batch_loop(
    cp: ControlPlaneCoordinator, agent: str, stop: asyncio.Event, batch: int
) -> None:
    capacity = 2 * batch
    in_flight = 0
    slot_freed = asyncio.Event()
    failures: list[BaseException] = []

    def finished(outcome: asyncio.Future[Any]) -> None:
        nonlocal in_flight
        in_flight -= 1
        slot_freed.set()
        error = outcome.exception() or outcome.result()
        if isinstance(error, BaseException):
            failures.append(error)

    async def flush(items: list[tuple[str, Any, str]]) -> list[Any | ControlPlaneError]:
        return list(await cp.complete_tasks(items))

    async with Batcher(flush, max_items=batch) as completions, cp.claimer(agent) as claimer:
        while not stop.is_set():
            if failures:
                raise failures[0]
            free = capacity - in_flight
            if free <= 0:
                slot_freed.clear()
                await slot_freed.wait()
                continue
            tasks = await claimer.claim(min(batch, free), wait_s=CLAIM_WAIT_S)
            for task in tasks:
                if task.lease_token is None:
                    continue
                in_flight += 1
                done = completions.submit_nowait((task.id, task.payload + 1, task.lease_token))
                done.add_done_callback(finished)


async def _claim_loop(
    cp: ControlPlaneCoordinator, agent: str, stop: asyncio.Event, mix: bool
) -> None:
    claimed = 0
    async with cp.claimer(agent) as claimer:
        while not stop.is_set():
            for task in await claimer.claim(1, wait_s=CLAIM_WAIT_S):
                if task.lease_token is None:
                    continue
                claimed += 1
                value = task.payload + 1
                result: Any = {"value": value, "agent": agent, "n": claimed} if mix else value
                await cp.complete_task(task.id, result, lease_token=task.lease_token)


async def _worker_main(settings: Settings, stop: asyncio.Event) -> None:
    async with ControlPlaneCoordinator(config_for(settings)) as cp:
        agents: list[tuple[str, list[str], int]]
        mix = settings.options.get("mode") == "mix"
        if mix:
            agents = [(a, list(caps), 1) for a, caps in settings.options["agents"]]
        else:
            agents = [(WORKER_AGENT, [], int(settings.options.get("slots", 1)))]
        batch = int(settings.options.get("batch", 1))
        for agent, caps, slots in agents:
            capacity = 2 * batch if batch > 1 else slots
            await cp.register_agent(agent, caps, MODEL, max_concurrent_tasks=capacity)
        background = [asyncio.create_task(_heartbeats(cp, [a for a, _, _ in agents]))]
        for agent, _, slots in agents:
            if batch > 1:
                background.append(asyncio.create_task(_batch_loop(cp, agent, stop, batch)))
                continue
            background += [
                asyncio.create_task(_claim_loop(cp, agent, stop, mix)) for _ in range(slots)
            ]
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait()), *background]
        try:
            # A loop that fails ends the worker process, which the producer notices.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in background:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise RuntimeError("a worker loop failed") from task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
