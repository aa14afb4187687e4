"""Our control plane as a system under comparison, on the Redis or the SQLite store.

Producer (the benchmark process): one ``ControlPlaneCoordinator`` without a reaper (a
client submits and waits, it does not maintain the store). ``submit`` is
``submit_task("add_one", value)``; ``result`` is ``wait_for_result(task_id, timeout)``,
which on Redis wakes on the store's pub/sub notification and on SQLite on the store's
``PRAGMA data_version`` poll (every 20 ms while anyone waits).

Worker (a separate process): one coordinator with its reaper, as an agent process would
run it on the library. One agent registers with ``max_concurrent_tasks = slots`` and runs
``slots`` claim loops, each ``claim_task(agent, wait_s=1)`` then
``complete_task(id, payload + 1, lease_token=...)``, and a heartbeat every
``heartbeat_interval``. With ``slots = 1`` this is the plain agent loop: one task at a
time, two store transitions per task. With ``batch = k > 1`` the agent
(``max_concurrent_tasks = k``) runs one loop of ``claim_tasks(max_tasks=k, wait_s=1)``
then ``complete_tasks`` for what it got: the batch API, one store operation (one
round trip) per batch on each side, each task still its own atomic transition.

Mix mode (workload W5): several agents with their own capabilities, one slot each, in
the same worker process and coordinator; each result also names the agent that ran the
task and the agent's claim counter, so the order of every agent's claims is known.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator, TaskPriority
from bench.peers.base import ADD_ONE, Adapter, Gate, Settings, import_peer

CLAIM_WAIT_S = 1.0
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

    @classmethod
    def describe(cls, slots: int, batch: int = 1) -> str:
        if batch > 1:
            return (
                f"1 process, 1 agent (max_concurrent_tasks={batch}), 1 loop: "
                f"claim_tasks(max_tasks={batch}, wait_s={CLAIM_WAIT_S:g}) + complete_tasks"
            )
        if slots == 1:
            return (
                f"1 process, 1 agent, 1 claim loop: claim_task(wait_s={CLAIM_WAIT_S:g}) "
                "+ complete_task"
            )
        return (
            f"1 process, 1 agent (max_concurrent_tasks={slots}), {slots} concurrent "
            f"claim loops: claim_task(wait_s={CLAIM_WAIT_S:g}) + complete_task"
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
        return await self.coordinator.submit_task(ADD_ONE, value)

    async def submit_mixed(self, value: int, capabilities: tuple[str, ...], rank: int) -> str:
        """Queue a W5 task with required capabilities and a priority (0 = CRITICAL)."""
        return await self.coordinator.submit_task(
            ADD_ONE, value, capabilities, TaskPriority.from_rank(rank)
        )

    async def result(self, handle: Any, timeout_s: float) -> Any:
        return await self.coordinator.wait_for_result(handle, timeout_s)

    async def close(self) -> None:
        if self._cp is not None:
            await self._cp.close()
            self._cp = None

    # -- worker process --------------------------------------------------------------
    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        loop = asyncio.new_event_loop()
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
    while not stop.is_set():
        tasks = await cp.claim_tasks(agent, max_tasks=batch, wait_s=CLAIM_WAIT_S)
        if not tasks:
            continue
        done = [(t.id, t.payload + 1, t.lease_token) for t in tasks if t.lease_token]
        for outcome in await cp.complete_tasks(done):
            if isinstance(outcome, Exception):
                raise outcome


async def _claim_loop(
    cp: ControlPlaneCoordinator, agent: str, stop: asyncio.Event, mix: bool
) -> None:
    claimed = 0
    while not stop.is_set():
        task = await cp.claim_task(agent, wait_s=CLAIM_WAIT_S)
        if task is None or task.lease_token is None:
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
            capacity = batch if batch > 1 else slots
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
