"""What the demo shows: a snapshot of the control plane, read over its HTTP API.

Task counts by status and the retry counter come from ``/metrics`` (the store's own
counts); agents from ``/api/control-plane/agents`` with each one's breaker from its
health route; recent tasks from the task list. :class:`BreakerWatch` remembers how
often each breaker opened and closed between snapshots.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aragora.client import AsyncControlPlaneClient
from aragora.control_plane.models import AgentInfo, Task

TASK_STATUSES = ("pending", "delayed", "running", "completed", "failed", "cancelled")
RECENT_TASKS = 8


@dataclass(frozen=True)
class AgentView:
    """One agent as the demo shows it."""

    agent_id: str
    model: str
    capabilities: tuple[str, ...]
    status: str
    breaker_state: str
    error_rate: float
    running: int
    max_concurrent_tasks: int


@dataclass(frozen=True)
class Snapshot:
    """The control plane at one moment."""

    taken_at: float
    counts: dict[str, int]
    retried: int
    agents: tuple[AgentView, ...]
    recent: tuple[Task, ...]


def parse_metrics(text: str) -> tuple[dict[str, int], int]:
    """Task counts by status (``delayed`` apart from ``pending``) and the number of
    retried attempts, summed over workspaces, from Prometheus text."""
    counts = dict.fromkeys(TASK_STATUSES, 0)
    retried = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aragora_queue_tasks":
                status = sample.labels.get("status", "")
                if status in counts:
                    counts[status] += int(sample.value)
            elif sample.name == "aragora_queue_delayed_tasks":
                counts["delayed"] += int(sample.value)
            elif sample.name == "aragora_tasks_retried_total":
                retried += sample.value
    return counts, int(retried)


class Monitor:
    """Takes snapshots through ``client`` (for the API) and ``http`` (for metrics and
    agent health), both authenticated with a token that may read metrics (admin)."""

    def __init__(self, client: AsyncControlPlaneClient, http: httpx.AsyncClient) -> None:
        self._client = client
        self._http = http

    async def snapshot(self) -> Snapshot:
        metrics, agents, recent = await asyncio.gather(
            self._http.get("/metrics"),
            self._client.list_agents(),
            self._client.list_tasks(limit=RECENT_TASKS),
        )
        metrics.raise_for_status()
        counts, retried = parse_metrics(metrics.text)
        views = await asyncio.gather(*(self._agent_view(a) for a in agents))
        return Snapshot(
            taken_at=time.time(),
            counts=counts,
            retried=retried,
            agents=tuple(sorted(views, key=lambda v: v.agent_id)),
            recent=tuple(recent.tasks),
        )

    async def _agent_view(self, agent: AgentInfo) -> AgentView:
        response = await self._http.get(f"/api/control-plane/agents/{agent.agent_id}/health")
        health = response.json() if response.status_code in (200, 503) else {}
        return AgentView(
            agent_id=agent.agent_id,
            model=agent.model,
            capabilities=tuple(agent.capabilities),
            status=agent.status.value,
            breaker_state=str(health.get("breaker_state", "unknown")),
            error_rate=float(health.get("error_rate", 0.0)),
            running=len(agent.running_task_ids),
            max_concurrent_tasks=agent.max_concurrent_tasks,
        )


@dataclass
class BreakerWatch:
    """Counts breaker openings and closings seen from one snapshot to the next."""

    last_state: dict[str, str] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)

    def observe(self, snapshot: Snapshot) -> list[tuple[str, str, str]]:
        """Record the snapshot; return the ``(agent, before, after)`` state changes."""
        changes = []
        for agent in snapshot.agents:
            before = self.last_state.get(agent.agent_id, "closed")
            after = agent.breaker_state
            if after == before or after == "unknown":
                continue
            self.last_state[agent.agent_id] = after
            changes.append((agent.agent_id, before, after))
            if after == "open" and before != "open":
                self.opened[agent.agent_id] = self.opened.get(agent.agent_id, 0) + 1
            elif after == "closed":
                self.closed[agent.agent_id] = self.closed.get(agent.agent_id, 0) + 1
        return changes
