"""The alert rules: what each one reads from the store and which conditions it finds.

A rule returns a :class:`RuleOutcome`: the condition alerts true now (``active``), the
key prefixes it evaluated completely (``scopes``: a firing alert under one of them that
is no longer active resolves), and event alerts to fire once (``events``). Rules only
read; the engine turns their findings into transitions.

Reads that a store primitive would make cheaper (noted for the store's authors):

* queue stalled: the oldest pending task is found by paging ``list_tasks(status=
  PENDING)`` (newest first) up to ``queue_scan_max_tasks``; an ``oldest_pending_at(ws)``
  primitive (Redis: a zset of claimable task id -> enqueue time kept by submit, claim
  and promote; SQLite: an index on the enqueue time of ready tasks) would make it O(1).
* dead letters: ``list_tasks(status=FAILED)`` is ordered by submission, not by finish
  time, so a recent failure of an old task is found only within the scan bound; a
  ``list_finished(ws, status, since)`` primitive over Redis ``done`` / the SQLite
  ``tasks_finished`` index would read exactly the new ones.
* breakers: one ``get_breaker`` per agent; a ``list_breakers(ws)`` primitive would read
  them in one step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aragora.alerts.models import AlertKind, AlertSeverity, AlertThresholds, Condition, alert_key
from aragora.control_plane.instances import InstanceRegistry
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    BreakerState,
    Task,
    TaskStatus,
)
from aragora.store.base import Store

_PAGE_SIZE = 500


@dataclass(slots=True)
class RuleOutcome:
    """What one rule found in one evaluation."""

    active: list[Condition] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    events: list[Condition] = field(default_factory=list)


class EvaluationContext:
    """The facts one evaluation reads, each read once and shared by the rules."""

    def __init__(
        self,
        store: Store,
        thresholds: AlertThresholds,
        now: float,
        instances: InstanceRegistry | None,
    ) -> None:
        self.store = store
        self.thresholds = thresholds
        self.now = now
        self.instances = instances
        self._workspaces: Sequence[str] | None = None
        self._agents: dict[str, list[AgentInfo]] = {}

    async def workspaces(self) -> Sequence[str]:
        if self._workspaces is None:
            self._workspaces = await self.store.list_workspaces()
        return self._workspaces

    async def agents(self, workspace_id: str) -> list[AgentInfo]:
        if workspace_id not in self._agents:
            self._agents[workspace_id] = await self.store.list_agents(workspace_id)
        return self._agents[workspace_id]


Rule = Callable[[EvaluationContext], Awaitable[RuleOutcome]]


def scope(kind: AlertKind, workspace_id: str) -> str:
    """The key prefix of one workspace's alerts of one kind."""
    return alert_key(kind, workspace_id, "")


# -- agents ------------------------------------------------------------------------------
async def agent_offline(ctx: EvaluationContext) -> RuleOutcome:
    """An agent the reaper marked OFFLINE (silent for ``heartbeat_timeout``); resolves
    when it heartbeats again or is deregistered."""
    outcome = RuleOutcome()
    for ws in await ctx.workspaces():
        agents = await ctx.agents(ws)
        outcome.scopes.append(scope(AlertKind.AGENT_OFFLINE, ws))
        for agent in agents:
            if agent.status is not AgentStatus.OFFLINE:
                continue
            silent_s = max(0.0, ctx.now - agent.last_heartbeat_at)
            outcome.active.append(
                Condition(
                    key=alert_key(AlertKind.AGENT_OFFLINE, ws, agent.agent_id),
                    kind=AlertKind.AGENT_OFFLINE,
                    severity=AlertSeverity.WARNING,
                    summary=f"agent {agent.agent_id} of workspace {ws} is offline",
                    workspace_id=ws,
                    details={
                        "agent_id": agent.agent_id,
                        "last_heartbeat_at": agent.last_heartbeat_at,
                        "silent_s": round(silent_s, 3),
                        "model": agent.model,
                    },
                )
            )
    return outcome


async def breaker_open(ctx: EvaluationContext) -> RuleOutcome:
    """An agent's circuit breaker is open or half-open; resolves once it closes."""
    outcome = RuleOutcome()
    for ws in await ctx.workspaces():
        agents = await ctx.agents(ws)
        breakers = await asyncio.gather(
            *(ctx.store.get_breaker(ws, agent.agent_id) for agent in agents)
        )
        outcome.scopes.append(scope(AlertKind.BREAKER_OPEN, ws))
        for breaker in breakers:
            if breaker.state is BreakerState.CLOSED:
                continue
            outcome.active.append(
                Condition(
                    key=alert_key(AlertKind.BREAKER_OPEN, ws, breaker.agent_id),
                    kind=AlertKind.BREAKER_OPEN,
                    severity=AlertSeverity.WARNING,
                    summary=(
                        f"circuit breaker of agent {breaker.agent_id} of workspace {ws}"
                        f" is {breaker.state.value.replace('_', '-')}"
                    ),
                    workspace_id=ws,
                    details={
                        "agent_id": breaker.agent_id,
                        "state": breaker.state.value,
                        "calls": breaker.calls,
                        "failures": breaker.failures,
                        "error_rate": round(breaker.error_rate, 4),
                        "opened_at": breaker.opened_at,
                    },
                )
            )
    return outcome


# -- tasks -------------------------------------------------------------------------------
def waiting_since(task: Task, now: float) -> float | None:
    """Since when a pending task has been claimable, or ``None`` while it waits out a
    retry backoff. A retried task counts from the end of its last attempt (or of its
    backoff), not from its submission."""
    if task.available_at is not None and task.available_at > now:
        return None
    since = task.errors[-1].at if task.errors else task.created_at
    if task.available_at is not None:
        since = max(since, task.available_at)
    return since


async def queue_stalled(ctx: EvaluationContext) -> RuleOutcome:
    """A workspace's oldest claimable task has waited longer than
    ``queue_oldest_pending_max_age_s``; resolves once it is claimed or the age drops."""
    outcome = RuleOutcome()
    limit_s = ctx.thresholds.queue_oldest_pending_max_age_s
    for ws in await ctx.workspaces():
        counts = await ctx.store.counts(ws)
        outcome.scopes.append(scope(AlertKind.QUEUE_STALLED, ws))
        if counts.pending - counts.delayed <= 0:
            continue
        oldest, scanned, truncated = await _oldest_claimable(ctx, ws)
        if oldest is None or ctx.now - oldest <= limit_s:
            continue
        age_s = round(ctx.now - oldest, 3)
        outcome.active.append(
            Condition(
                key=alert_key(AlertKind.QUEUE_STALLED, ws, "queue"),
                kind=AlertKind.QUEUE_STALLED,
                severity=AlertSeverity.WARNING,
                summary=(
                    f"the oldest pending task of workspace {ws} has waited {age_s:g}s"
                    f" (limit {limit_s:g}s)"
                ),
                workspace_id=ws,
                details={
                    "oldest_pending_age_s": age_s,
                    "max_age_s": limit_s,
                    "pending": counts.pending,
                    "delayed": counts.delayed,
                    "scanned_tasks": scanned,
                    "scan_truncated": truncated,
                },
            )
        )
    return outcome


async def _oldest_claimable(ctx: EvaluationContext, ws: str) -> tuple[float | None, int, bool]:
    oldest: float | None = None
    scanned = 0
    cursor: str | None = None
    while True:
        page = await ctx.store.list_tasks(
            ws, status=TaskStatus.PENDING, limit=_PAGE_SIZE, cursor=cursor
        )
        for task in page.tasks:
            since = waiting_since(task, ctx.now)
            if since is not None and (oldest is None or since < oldest):
                oldest = since
        scanned += len(page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            return oldest, scanned, False
        if scanned >= ctx.thresholds.queue_scan_max_tasks:
            return oldest, scanned, True


def dead_letter_condition(task: Task) -> Condition:
    """The event alert of a task that ended FAILED: no attempt will follow."""
    last = task.errors[-1].error if task.errors else task.error
    return Condition(
        key=alert_key(AlertKind.TASK_DEAD_LETTERED, task.workspace_id, task.id),
        kind=AlertKind.TASK_DEAD_LETTERED,
        severity=AlertSeverity.WARNING,
        summary=(
            f"task {task.id} ({task.task_type}) of workspace {task.workspace_id} failed"
            f" after {task.attempt} attempt(s)"
        ),
        workspace_id=task.workspace_id,
        details={
            "task_id": task.id,
            "task_type": task.task_type,
            "priority": task.priority.value,
            "attempts": task.attempt,
            "max_retries": task.max_retries,
            "last_error": (last or "")[:1000],
            "finished_at": task.finished_at,
        },
    )


async def dead_letters(ctx: EvaluationContext) -> RuleOutcome:
    """Tasks that ended FAILED within ``dead_letter_lookback_s`` (one event each)."""
    outcome = RuleOutcome()
    since = ctx.now - ctx.thresholds.dead_letter_lookback_s
    for ws in await ctx.workspaces():
        scanned = 0
        cursor: str | None = None
        while scanned < ctx.thresholds.dead_letter_scan_max_tasks:
            page = await ctx.store.list_tasks(
                ws, status=TaskStatus.FAILED, limit=_PAGE_SIZE, cursor=cursor
            )
            scanned += len(page.tasks)
            outcome.events += [
                dead_letter_condition(task)
                for task in page.tasks
                if task.finished_at is not None and task.finished_at >= since
            ]
            cursor = page.next_cursor
            if cursor is None:
                break
    return outcome


# -- instances ---------------------------------------------------------------------------
async def instance_lost(ctx: EvaluationContext) -> RuleOutcome:
    """A server instance stopped beating for ``instance_timeout_s`` without
    deregistering; resolves when it beats again (or its record is forgotten)."""
    outcome = RuleOutcome()
    if ctx.instances is None:
        return outcome
    await ctx.instances.mark_gone(ctx.thresholds.instance_timeout_s)
    outcome.scopes.append(alert_key(AlertKind.INSTANCE_LOST, ""))
    for info in await ctx.instances.gone_since(0.0):
        outcome.active.append(
            Condition(
                key=alert_key(AlertKind.INSTANCE_LOST, info.instance_id),
                kind=AlertKind.INSTANCE_LOST,
                severity=AlertSeverity.CRITICAL,
                summary=f"instance {info.instance_id} on {info.host} (pid {info.pid}) is lost",
                details={
                    "instance_id": info.instance_id,
                    "host": info.host,
                    "pid": info.pid,
                    "version": info.version,
                    "last_beat_at": info.last_beat_at,
                    "gone_at": info.gone_at,
                },
            )
        )
    return outcome


RULES: dict[AlertKind, Rule] = {
    AlertKind.AGENT_OFFLINE: agent_offline,
    AlertKind.BREAKER_OPEN: breaker_open,
    AlertKind.QUEUE_STALLED: queue_stalled,
    AlertKind.TASK_DEAD_LETTERED: dead_letters,
    AlertKind.INSTANCE_LOST: instance_lost,
}
"""The scheduled rules, in evaluation order. Budget soft limits arrive as store events
and store reachability is judged by the engine itself."""
