"""Faults on a seeded schedule, each undone after a while, and the time to recover.

The schedule is a sequence of rounds; each round is every enabled fault kind once, in
an order drawn from the seed, so any run of ``len(kinds)`` faults covers every kind.
Faults never overlap: after one is undone the injector waits for recovery (bounded by
``recovery_timeout_s``), then a random gap, then injects the next.

Recovery is timed from the moment a fault ends (process restarted, continued, proxy
restored) until every server answers ``/readyz`` and a CRITICAL ``probe`` task submitted
right then has completed.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from aragora.client import AsyncControlPlaneClient
from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.models import TaskPriority
from chaos.cluster import Cluster
from chaos.execlog import LogTail
from chaos.procs import AgentProcess
from chaos.scenario import FaultKind, Scenario

PROBE_REQUEST_TIMEOUT_S = 5.0


@dataclass
class FaultRecord:
    """One injected fault; times are wall-clock seconds (``time.time()``)."""

    number: int
    kind: FaultKind
    target: str
    started_at: float
    ended_at: float = 0.0
    recovery_s: float | None = None
    probe_task_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        return data


def fault_schedule(kinds: tuple[FaultKind, ...], rng: random.Random) -> Iterator[FaultKind]:
    """Endless rounds, each a seeded permutation of ``kinds``."""
    while True:
        order = list(kinds)
        rng.shuffle(order)
        yield from order


class Prober:
    """Times recovery with probe tasks and readiness checks."""

    def __init__(self, cluster: Cluster, token: str, timeout_s: float) -> None:
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.clients = [
            AsyncControlPlaneClient(url, token, timeout_s=PROBE_REQUEST_TIMEOUT_S)
            for url in cluster.urls
        ]
        self.http = httpx.AsyncClient(timeout=PROBE_REQUEST_TIMEOUT_S)
        self.probe_ids: list[str] = []

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), self.http.aclose())

    async def recover(self, key: str, since: float) -> tuple[float | None, str | None]:
        """Seconds from ``since`` (monotonic) to full recovery, None past the timeout;
        and the probe task's id."""
        deadline = since + self.timeout_s
        task_id: str | None = None
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                task_id = await self._submit_probe(key)
                await self._wait_probe(task_id)
                await self._wait_ready()
        except TimeoutError:
            return None, task_id
        return time.monotonic() - since, task_id

    async def _submit_probe(self, key: str) -> str:
        attempt = 0
        while True:
            client = self.clients[attempt % len(self.clients)]
            try:
                task_id = await client.submit_task(
                    "probe", {}, (), TaskPriority.CRITICAL, idempotency_key=key
                )
                self.probe_ids.append(task_id)
                return task_id
            except ControlPlaneError:
                attempt += 1
                await asyncio.sleep(0.05)

    async def _wait_probe(self, task_id: str) -> None:
        attempt = 0
        while True:
            client = self.clients[attempt % len(self.clients)]
            try:
                task = await client.get_task(task_id, wait_s=2.0)
                if task.is_terminal:
                    return
            except ControlPlaneError:
                attempt += 1
                await asyncio.sleep(0.05)

    async def _wait_ready(self) -> None:
        for server in self.cluster.servers:
            while True:
                if await server.is_ready(self.http):
                    break
                await asyncio.sleep(0.05)  # polling another process's readiness


class FaultInjector:
    """Injects faults on the seeded schedule until told to stop."""

    def __init__(self, cluster: Cluster, scenario: Scenario, prober: Prober) -> None:
        self.cluster = cluster
        self.scenario = scenario
        self.prober = prober
        self.rng = random.Random(f"faults:{scenario.seed}")
        self.schedule = fault_schedule(scenario.fault_kinds, self.rng)
        self.records: list[FaultRecord] = []
        self.tails = {a.agent_id: LogTail(a.exec_log) for a in cluster.agents}

    async def run(self, until: float) -> list[FaultRecord]:
        """Inject faults until ``until`` (monotonic); a fault underway is finished."""
        while True:
            gap_s = self.rng.uniform(self.scenario.fault_gap_min_s, self.scenario.fault_gap_max_s)
            if time.monotonic() + gap_s >= until:
                return self.records
            await asyncio.sleep(gap_s)
            await self.inject(next(self.schedule))

    async def inject(self, kind: FaultKind) -> FaultRecord:
        number = len(self.records) + 1
        record = FaultRecord(number, kind, "", time.time())
        self.records.append(record)
        await getattr(self, f"_{kind.value}")(record)
        record.ended_at = time.time()
        recovery_s, probe = await self.prober.recover(f"probe-{number}", time.monotonic())
        record.recovery_s, record.probe_task_id = recovery_s, probe
        return record

    # -- choosing a target ------------------------------------------------------------
    def _busy_agent(self) -> AgentProcess:
        """An agent with a task in flight if any (a random live one otherwise)."""
        live = [a for a in self.cluster.agents if a.alive()]
        for tail in self.tails.values():
            tail.poll()
        busy = [a for a in live if self.tails[a.agent_id].in_flight]
        return self.rng.choice(busy or live or self.cluster.agents)

    def _short_s(self) -> float:
        return self.rng.uniform(0.5, 2.0)

    # -- the faults ---------------------------------------------------------------------
    async def _agent_kill(self, record: FaultRecord) -> None:
        agent = self._busy_agent()
        tail = self.tails[agent.agent_id]
        record.target = agent.agent_id
        record.detail["in_flight"] = len(tail.in_flight)
        agent.kill()
        tail.forget_in_flight()
        await asyncio.sleep(self._short_s())
        agent.start()

    async def _agent_stop(self, record: FaultRecord) -> None:
        agent = self._busy_agent()
        record.target = agent.agent_id
        record.detail["in_flight"] = len(self.tails[agent.agent_id].in_flight)
        scenario = self.scenario
        hold_s = (
            scenario.heartbeat_timeout_s
            + 2 * scenario.heartbeat_interval_s
            + self.rng.uniform(1.0, 2.0)
        )
        record.detail["hold_s"] = round(hold_s, 3)
        agent.signal(signal.SIGSTOP)
        record.detail["stopped_at"] = time.time()
        await asyncio.sleep(hold_s)
        record.detail["continued_at"] = time.time()
        agent.signal(signal.SIGCONT)

    async def _server_kill(self, record: FaultRecord) -> None:
        server = self.rng.choice(self.cluster.servers)
        record.target = server.name
        server.kill()
        await asyncio.sleep(self._short_s())
        server.start()

    async def _redis_restart(self, record: FaultRecord) -> None:
        redis = self.cluster.redis
        record.target = redis.name
        redis.kill()
        await asyncio.sleep(self._short_s())
        redis.start()
        await redis.wait_ready()

    async def _redis_pause(self, record: FaultRecord) -> None:
        redis = self.cluster.redis
        record.target = redis.name
        hold_s = self.rng.uniform(2.0, 4.0)
        record.detail["hold_s"] = round(hold_s, 3)
        redis.signal(signal.SIGSTOP)
        await asyncio.sleep(hold_s)
        redis.signal(signal.SIGCONT)

    async def _connection_drop(self, record: FaultRecord) -> None:
        proxy = self.cluster.proxy
        record.target = proxy.name
        hold_s = self.rng.uniform(1.0, 3.0)
        record.detail["hold_s"] = round(hold_s, 3)
        proxy.cut()
        await asyncio.sleep(hold_s)
        proxy.restore()
