"""The live feed of the dashboard: snapshots of a workspace, pushed when they change.

One :class:`WorkspaceFeed` runs per workspace that has at least one subscriber, however
many browsers watch it: it reads the store at most once per tick (``tick_s``, default
1 s), or sooner (but never more often than ``min_interval_s``) when this instance's
scheduler submits or finishes a task of the workspace. Changes made through other
instances of the deployment show up at the next tick. A feed stops when its last
subscriber leaves.

A snapshot has three sections, each sent as its own event only when it differs from
the one sent before:

``overview``
    health checks as measured (pass/warn/fail per component and server instance), task
    counts by status, tasks finished per second (from the terminal counts of the
    snapshots of the last :data:`RATE_WINDOW_S`), queue depth and the age of the oldest
    claimable task by priority, agents by status. When the store cannot be read it is
    ``{"error": "..."}`` instead.
``agents``
    every agent of the workspace with its breaker (state, error rate, calls).
``tasks``
    a digest of the newest :data:`TASK_DIGEST_SIZE` tasks (id, type, priority, status,
    attempt, agent, times; never payloads or results): a client refetches what it shows
    when it changes.

A subscriber sees only the sections its principal may read (``agents`` needs
``agent.read``, ``overview`` needs ``health.read``); every section is of the
subscriber's own workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.health import HealthStatus
from aragora.control_plane.models import AgentInfo, BreakerInfo, Task, TaskCounts
from aragora.server.health import CheckResult, HealthEvaluator

logger = logging.getLogger(__name__)

OVERVIEW: Final = "overview"
AGENTS: Final = "agents"
TASKS: Final = "tasks"
SECTIONS: Final = (OVERVIEW, AGENTS, TASKS)
TASK_DIGEST_SIZE: Final = 100
RATE_WINDOW_S: Final = 10.0
"""Tasks per second are averaged over the snapshots of this many seconds."""
_SEVERITY: Final = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}
# Measurements that move on every reading; kept out so that an idle workspace sends
# nothing. Statuses, times of the last beat and outputs stay.
_VOLATILE_CHECKS: Final = frozenset({"store", "instance:heartbeat"})


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One section of a snapshot, already encoded as JSON."""

    name: str
    data: str

    def encode(self) -> bytes:
        """The event in ``text/event-stream`` framing."""
        return f"event: {self.name}\ndata: {self.data}\n\n".encode()


class Subscription:
    """What one client has not been sent yet: the newest event of each section it may
    see (a slow client skips intermediate snapshots instead of queueing them)."""

    def __init__(self, sections: frozenset[str]) -> None:
        self.sections = sections
        self._pending: dict[str, FeedEvent] = {}
        self._ready = asyncio.Event()

    def offer(self, event: FeedEvent) -> None:
        if event.name in self.sections:
            self._pending[event.name] = event
            self._ready.set()

    async def next_events(self, timeout_s: float) -> list[FeedEvent]:
        """The events waiting, once there is one; ``[]`` after ``timeout_s`` without."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return []
        self._ready.clear()
        events = list(self._pending.values())
        self._pending.clear()
        return events


def _dumps(data: Any) -> str:
    # ASCII escapes keep strings that are not valid Unicode encodable.
    return json.dumps(data, separators=(",", ":"), allow_nan=False, sort_keys=True)


def _check_to_dict(check: CheckResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": check.name,
        "status": check.status.value,
        "component_id": check.component_id,
        "time": check.time,
        "output": check.output,
    }
    if check.name not in _VOLATILE_CHECKS:
        out["observed_value"] = check.observed_value
        out["observed_unit"] = check.observed_unit
    return out


def _agent_row(agent: AgentInfo, breaker: BreakerInfo) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "capabilities": list(agent.capabilities),
        "model": agent.model,
        "status": agent.status.value,
        "max_concurrent_tasks": agent.max_concurrent_tasks,
        "running_task_ids": list(agent.running_task_ids),
        "last_heartbeat_at": agent.last_heartbeat_at,
        "breaker_state": breaker.state.value,
        "error_rate": round(breaker.error_rate, 4),
        "calls_in_window": breaker.calls,
        "failures_in_window": breaker.failures,
    }


def _task_digest(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "task_type": task.task_type,
        "priority": task.priority.value,
        "status": task.status.value,
        "attempt": task.attempt,
        "agent_id": task.agent_id,
        "created_at": task.created_at,
        "finished_at": task.finished_at,
    }


def _finished_total(counts: TaskCounts) -> int:
    return counts.completed + counts.failed + counts.cancelled


class _Rate:
    """Tasks finished per second over the last :data:`RATE_WINDOW_S` of snapshots."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, finished_total: int) -> float | None:
        self._samples.append((now, finished_total))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_at, first = self._samples[0]
        span_s = now - first_at
        if span_s < 1.0:
            return None
        # Terminal tasks deleted after their result TTL lower the total: count no less
        # than nothing.
        return round(max(0, finished_total - first) / span_s, 2)


async def read_sections(
    cp: ControlPlaneCoordinator,
    health: HealthEvaluator,
    workspace_id: str,
    rate: _Rate | None = None,
) -> dict[str, Any]:
    """One snapshot of ``workspace_id``: the sections of the module docstring."""
    try:
        checks = await health.measure(workspace_id)
        counts = await cp.store.counts(workspace_id)
        now = await cp.store.now()
        agents = await cp.list_agents(workspace_id=workspace_id)
        breakers = await asyncio.gather(
            *(cp.get_breaker(a.agent_id, workspace_id=workspace_id) for a in agents)
        )
        page = await cp.list_tasks(limit=TASK_DIGEST_SIZE, workspace_id=workspace_id)
    except ControlPlaneError as exc:
        return {OVERVIEW: {"error": f"the store could not be read: {exc}"}}
    queues = next((c for c in checks if c.name == "queues"), None)
    agents_check = next((c for c in checks if c.name == "agents"), None)
    by_priority: Mapping[str, Any] = queues.details.get("by_priority", {}) if queues else {}
    ages = [
        v["oldest_pending_age_s"]
        for v in by_priority.values()
        if v.get("oldest_pending_age_s") is not None
    ]
    worst = max((_SEVERITY[c.status] for c in checks), default=0)
    overview = {
        "status": next(s for s, rank in _SEVERITY.items() if rank == worst).value,
        "checks": [_check_to_dict(c) for c in checks],
        "counts": {
            "pending": counts.pending,
            "delayed": counts.delayed,
            "running": counts.running,
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
        },
        "tasks_per_s": None if rate is None else rate.add(now, _finished_total(counts)),
        "queues": by_priority,
        "oldest_pending_age_s": round(max(ages), 1) if ages else None,
        "agents_by_status": agents_check.details.get("by_status", {}) if agents_check else {},
    }
    return {
        OVERVIEW: overview,
        AGENTS: {"agents": [_agent_row(a, b) for a, b in zip(agents, breakers, strict=True)]},
        TASKS: {"tasks": [_task_digest(t) for t in page.tasks]},
    }


class WorkspaceFeed:
    """The snapshots of one workspace, read once per tick for all its subscribers."""

    def __init__(
        self,
        cp: ControlPlaneCoordinator,
        health: HealthEvaluator,
        workspace_id: str,
        *,
        tick_s: float,
        min_interval_s: float,
    ) -> None:
        self.workspace_id = workspace_id
        self._cp = cp
        self._health = health
        self._tick_s = tick_s
        self._min_interval_s = min_interval_s
        self._subscribers: set[Subscription] = set()
        self._latest: dict[str, FeedEvent] = {}
        self._poked = asyncio.Event()
        self._rate = _Rate()
        self._task: asyncio.Task[None] | None = None
        self.reads = 0
        """How many snapshots were read (tests check one per tick, not per client)."""

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def poke(self) -> None:
        """Something changed here: read a snapshot soon rather than at the next tick."""
        self._poked.set()

    def add(self, subscription: Subscription) -> None:
        self._subscribers.add(subscription)
        for event in self._latest.values():
            subscription.offer(event)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"feed:{self.workspace_id}")

    async def remove(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        if not self._subscribers and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._poked.clear()
            try:
                sections = await read_sections(
                    self._cp, self._health, self.workspace_id, self._rate
                )
            except Exception:
                logger.exception("dashboard feed of workspace %s failed", self.workspace_id)
                sections = {OVERVIEW: {"error": "the server could not read this workspace"}}
            self.reads += 1
            self._publish(sections)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self._tick_s)
            elapsed_s = loop.time() - started
            if elapsed_s < self._min_interval_s:
                await asyncio.sleep(self._min_interval_s - elapsed_s)

    def _publish(self, sections: Mapping[str, Any]) -> None:
        for name, data in sections.items():
            event = FeedEvent(name, _dumps(data))
            previous = self._latest.get(name)
            if previous is not None and previous.data == event.data:
                continue
            self._latest[name] = event
            for subscription in tuple(self._subscribers):
                subscription.offer(event)


class EventHub:
    """The feeds of one server: one per watched workspace, fed by the scheduler's
    listeners of this instance and by the tick."""

    def __init__(
        self,
        cp: ControlPlaneCoordinator,
        health: HealthEvaluator,
        *,
        tick_s: float = 1.0,
        min_interval_s: float = 0.2,
    ) -> None:
        if tick_s <= 0 or min_interval_s < 0:
            raise ValueError("tick_s must be positive and min_interval_s not negative")
        self._cp = cp
        self._health = health
        self._tick_s = tick_s
        self._min_interval_s = min_interval_s
        self._feeds: dict[str, WorkspaceFeed] = {}
        cp.scheduler.on_submitted.append(self._on_task)
        cp.scheduler.on_finished.append(self._on_task)

    def feed(self, workspace_id: str) -> WorkspaceFeed | None:
        """The running feed of a workspace, if anyone watches it."""
        return self._feeds.get(workspace_id)

    def _on_task(self, task: Task) -> None:
        feed = self._feeds.get(task.workspace_id)
        if feed is not None:
            feed.poke()

    async def snapshot(self, workspace_id: str) -> dict[str, Any]:
        """One snapshot read now, outside any feed (``tasks_per_s`` is then ``None``)."""
        return await read_sections(self._cp, self._health, workspace_id)

    @asynccontextmanager
    async def subscribe(
        self, workspace_id: str, sections: frozenset[str]
    ) -> AsyncIterator[Subscription]:
        """Watch a workspace's sections until the block ends."""
        feed = self._feeds.get(workspace_id)
        if feed is None:
            feed = WorkspaceFeed(
                self._cp,
                self._health,
                workspace_id,
                tick_s=self._tick_s,
                min_interval_s=self._min_interval_s,
            )
            self._feeds[workspace_id] = feed
        subscription = Subscription(sections)
        feed.add(subscription)
        try:
            yield subscription
        finally:
            await feed.remove(subscription)
            if not feed.subscribers and self._feeds.get(workspace_id) is feed:
                del self._feeds[workspace_id]

    def close(self) -> None:
        """Stop listening to the scheduler. Idempotent."""
        for listeners in (self._cp.scheduler.on_submitted, self._cp.scheduler.on_finished):
            if self._on_task in listeners:
                listeners.remove(self._on_task)
