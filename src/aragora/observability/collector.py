"""Gauges read from the store when Prometheus scrapes: queues, agents, breakers, instances.

Prometheus calls ``collect()`` synchronously, while the store is asynchronous and bound
to the event loop; so :meth:`CoordinatorCollector.refresh` reads a snapshot (awaited by
the ``/metrics`` handler just before rendering, one read at a time however many scrapes
arrive together) and ``collect()`` turns the latest snapshot into metric families:

``aragora_queue_tasks{workspace,status}``
    tasks by status (``pending`` includes those waiting out a retry backoff)
``aragora_queue_delayed_tasks{workspace}``
    pending tasks waiting out a retry backoff
``aragora_agents{workspace,status}``
    agents by status (idle, busy, draining, offline)
``aragora_breakers{workspace,state}``
    agents' circuit breakers by state (counts, never agent ids)
``aragora_instances{state}``
    server instances live / gone (when an instance registry is given)
``aragora_store_up``
    1 if the last refresh read the store, else 0
``aragora_metrics_refresh_seconds``
    how long the last refresh took

Workspaces beyond ``max_workspace_labels`` (in name order) are summed under ``_other``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.models import AgentStatus, BreakerState, TaskCounts
from aragora.observability.metrics import DEFAULT_MAX_WORKSPACE_LABELS, OTHER_WORKSPACE

if TYPE_CHECKING:
    from aragora.control_plane.instances import InstanceRegistry
    from aragora.store.base import Store

TASK_STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
DEFAULT_INSTANCE_TIMEOUT_S: Final = 30.0


@dataclass(slots=True)
class _Snapshot:
    store_up: bool = False
    refresh_s: float = 0.0
    tasks: Counter[tuple[str, str]] = field(default_factory=Counter)
    delayed: Counter[str] = field(default_factory=Counter)
    agents: Counter[tuple[str, str]] = field(default_factory=Counter)
    breakers: Counter[tuple[str, str]] = field(default_factory=Counter)
    instances: Counter[str] | None = None


class CoordinatorCollector(Collector):
    """Scrape-time gauges of one store; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        instances: InstanceRegistry | None = None,
        max_workspace_labels: int = DEFAULT_MAX_WORKSPACE_LABELS,
        instance_timeout_s: float = DEFAULT_INSTANCE_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._instances = instances
        self._max_workspaces = max_workspace_labels
        self._instance_timeout_s = instance_timeout_s
        self._snapshot = _Snapshot()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read a fresh snapshot; a scrape arriving during a refresh shares it."""
        if self._lock.locked():
            async with self._lock:
                return
        async with self._lock:
            started = time.perf_counter()
            try:
                snapshot = await self._read()
            except ControlPlaneError:
                snapshot = _Snapshot(store_up=False)
            snapshot.refresh_s = time.perf_counter() - started
            self._snapshot = snapshot

    async def _read(self) -> _Snapshot:
        snapshot = _Snapshot(store_up=True)
        workspaces = sorted(await self._store.list_workspaces())
        labels = {
            ws: ws if i < self._max_workspaces else OTHER_WORKSPACE
            for i, ws in enumerate(workspaces)
        }
        per_workspace = await asyncio.gather(*(self._read_workspace(ws) for ws in workspaces))
        for ws, (counts, agents, breakers) in zip(workspaces, per_workspace, strict=True):
            label = labels[ws]
            for status in TASK_STATUSES:
                snapshot.tasks[(label, status)] += getattr(counts, status)
            snapshot.delayed[label] += counts.delayed
            for status in AgentStatus:
                snapshot.agents[(label, status.value)] += agents[status.value]
            for state in BreakerState:
                snapshot.breakers[(label, state.value)] += breakers[state.value]
        if self._instances is not None:
            live = await self._instances.list_live(self._instance_timeout_s)
            gone = await self._instances.gone_since(0.0)
            snapshot.instances = Counter({"live": len(live), "gone": len(gone)})
        return snapshot

    async def _read_workspace(self, ws: str) -> tuple[TaskCounts, Counter[str], Counter[str]]:
        counts = await self._store.counts(ws)
        agents = await self._store.list_agents(ws)
        breakers = await asyncio.gather(*(self._store.get_breaker(ws, a.agent_id) for a in agents))
        return (
            counts,
            Counter(a.status.value for a in agents),
            Counter(b.state.value for b in breakers),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families(_Snapshot(instances=Counter())))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._snapshot))

    def _families(self, snapshot: _Snapshot) -> Iterable[Metric]:
        yield _family(
            "aragora_queue_tasks",
            "Tasks of a workspace by status (pending includes delayed).",
            ("workspace", "status"),
            snapshot.tasks.items(),
        )
        yield _family(
            "aragora_queue_delayed_tasks",
            "Pending tasks waiting out a retry backoff.",
            ("workspace",),
            (((ws,), n) for ws, n in snapshot.delayed.items()),
        )
        yield _family(
            "aragora_agents",
            "Agents of a workspace by status.",
            ("workspace", "status"),
            snapshot.agents.items(),
        )
        yield _family(
            "aragora_breakers",
            "Circuit breakers of a workspace's agents by state.",
            ("workspace", "state"),
            snapshot.breakers.items(),
        )
        if snapshot.instances is not None:
            yield _family(
                "aragora_instances",
                "Server instances by state.",
                ("state",),
                (((state,), n) for state, n in snapshot.instances.items()),
            )
        up = GaugeMetricFamily("aragora_store_up", "1 if the last refresh read the store.")
        up.add_metric([], 1.0 if snapshot.store_up else 0.0)
        yield up
        took = GaugeMetricFamily(
            "aragora_metrics_refresh_seconds", "Time the last refresh of store gauges took."
        )
        took.add_metric([], snapshot.refresh_s)
        yield took


def _family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    samples: Iterable[tuple[tuple[str, ...], int]],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, value in sorted(samples):
        family.add_metric(list(values), float(value))
    return family
