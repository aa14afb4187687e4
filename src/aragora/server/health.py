"""Health of the deployment as one instance sees it, with hysteresis.

``GET /api/control-plane/health`` answers ``application/health+json``. Its checks:

``store``
    one ping of the store; ``observedValue`` is its latency in ms. ``fail`` when the
    store does not answer, ``warn`` above :data:`STORE_LATENCY_WARN_MS`.
``instance:heartbeat``
    one entry per live server instance of the deployment (``componentId`` = instance
    id, ``time`` = its last beat, ``observedValue`` = seconds since then, ``details.
    version``). ``warn`` when the last beat is older than two heartbeat intervals (the
    instance missed a beat but is not yet lost); an instance silent for the heartbeat
    timeout is not live and is left out. If this instance itself is missing (its beats
    fail), an entry for it says so with ``warn``.
``agents``
    the caller's workspace: agents by status and how many have an open or half-open
    circuit breaker. ``warn`` when an agent is offline or a breaker is not closed.
``queues``
    the caller's workspace: pending tasks (``observedValue``), and per priority the
    depth and the age of the oldest claimable task, read by paging the pending tasks up
    to :data:`QUEUE_SCAN_MAX_TASKS` (``scan_truncated`` says when the figures are lower
    bounds). ``warn`` when a claimable task has waited longer than the alert threshold
    ``queue_oldest_pending_max_age_s``.

Each check shows its status as measured. The overall ``status`` (and the HTTP status:
503 for ``fail``, else 200) has *hysteresis*: a component counts with a status only
once it measured at least that bad in :data:`HYSTERESIS_EVALUATIONS` consecutive
evaluations (each request is one evaluation), so one slow ping or one late beat does
not flip a load balancer. A component counts as good again at its first good
evaluation. The history is kept per server instance, in memory, per component (per
workspace for the workspace checks, per instance id for the heartbeat entries).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from aragora.alerts.models import AlertThresholds
from aragora.alerts.rules import waiting_since
from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.health import HealthStatus
from aragora.control_plane.instances import InstanceInfo, InstanceRegistry
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    BreakerInfo,
    BreakerState,
    TaskPriority,
    TaskStatus,
)
from aragora.store.base import Store

HYSTERESIS_EVALUATIONS: Final = 2
"""Consecutive bad evaluations before a component degrades the overall status."""
STORE_LATENCY_WARN_MS: Final = 250.0
QUEUE_SCAN_MAX_TASKS: Final = 1000
"""Pending tasks read per health request to find depths and oldest ages by priority."""
_QUEUE_PAGE_SIZE: Final = 500
_MAX_TRACKED_COMPONENTS: Final = 10_000
_SEVERITY: Final = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}
_BY_SEVERITY: Final = {rank: status for status, rank in _SEVERITY.items()}


def iso_time(epoch_s: float) -> str:
    """Epoch seconds as ISO 8601 in UTC (the ``time`` of a health+json check)."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class CheckResult:
    """One entry of a health+json ``checks`` list, as measured."""

    name: str
    status: HealthStatus
    key: str
    observed_value: float | None = None
    observed_unit: str | None = None
    component_id: str | None = None
    component_type: str | None = None
    time: str | None = None
    output: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value}
        if self.component_id is not None:
            out["componentId"] = self.component_id
        if self.component_type is not None:
            out["componentType"] = self.component_type
        if self.observed_value is not None:
            out["observedValue"] = self.observed_value
        if self.observed_unit is not None:
            out["observedUnit"] = self.observed_unit
        if self.time is not None:
            out["time"] = self.time
        if self.output is not None:
            out["output"] = self.output
        if self.details:
            out["details"] = self.details
        return out


class Hysteresis:
    """The statuses of the last evaluations of each component, and what they count as.

    A component's effective status is the best of its last ``evaluations`` measured
    statuses (a component seen fewer times counts the missing ones as ``pass``).
    At most ``max_components`` components are remembered (least recently seen first
    forgotten), so ever-changing instance ids do not grow it without bound.
    """

    def __init__(
        self,
        evaluations: int = HYSTERESIS_EVALUATIONS,
        *,
        max_components: int = _MAX_TRACKED_COMPONENTS,
    ) -> None:
        if evaluations < 1:
            raise ValueError("evaluations must be at least 1")
        self.evaluations = evaluations
        self._max = max_components
        self._history: OrderedDict[str, deque[HealthStatus]] = OrderedDict()

    def observe(self, key: str, status: HealthStatus) -> HealthStatus:
        """Record one measurement of ``key`` and return its effective status."""
        history = self._history.pop(key, None)
        if history is None:
            history = deque(maxlen=self.evaluations)
        history.append(status)
        self._history[key] = history
        while len(self._history) > self._max:
            self._history.popitem(last=False)
        if len(history) < self.evaluations:
            return HealthStatus.PASS
        return _BY_SEVERITY[min(_SEVERITY[s] for s in history)]


@dataclass(frozen=True, slots=True)
class HealthAnswer:
    """An evaluated report: overall status (after hysteresis) and the measured checks."""

    status: HealthStatus
    checks: tuple[CheckResult, ...]

    def body(self) -> dict[str, Any]:
        checks: dict[str, list[dict[str, Any]]] = {}
        for check in self.checks:
            checks.setdefault(check.name, []).append(check.to_dict())
        return {
            "status": self.status.value,
            "description": "aragora control plane",
            "checks": checks,
        }

    @property
    def http_status(self) -> int:
        return 503 if self.status is HealthStatus.FAIL else 200


class HealthEvaluator:
    """Measures the checks of the module docstring and applies the hysteresis."""

    def __init__(
        self,
        store: Store,
        config: ControlPlaneConfig,
        *,
        instances: InstanceRegistry | None = None,
        thresholds: AlertThresholds | None = None,
        hysteresis: Hysteresis | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._instances = instances
        self._thresholds = thresholds or AlertThresholds()
        self.hysteresis = hysteresis or Hysteresis()
        self._lock = asyncio.Lock()

    async def evaluate(self, workspace_id: str) -> HealthAnswer:
        """One evaluation for a caller of ``workspace_id``."""
        checks = await self.measure(workspace_id)
        async with self._lock:
            effective = [self.hysteresis.observe(c.key, c.status) for c in checks]
        overall = _BY_SEVERITY[max((_SEVERITY[s] for s in effective), default=0)]
        return HealthAnswer(overall, tuple(checks))

    async def measure(self, workspace_id: str) -> list[CheckResult]:
        """The checks as measured now, without hysteresis."""
        store_check, now = await self._store_check()
        if store_check.status is HealthStatus.FAIL or now is None:
            return [store_check]
        try:
            instances = await self._instance_checks(now)
            agents = await self._agents_check(workspace_id, now)
            queues = await self._queues_check(workspace_id, now)
        except ControlPlaneError as exc:
            return [
                CheckResult("store", HealthStatus.FAIL, "store", output=f"store read failed: {exc}")
            ]
        return [store_check, *instances, agents, queues]

    # -- checks ----------------------------------------------------------------------
    async def _store_check(self) -> tuple[CheckResult, float | None]:
        started = time.perf_counter()
        try:
            await self._store.ping()
            now = await self._store.now()
        except ControlPlaneError as exc:
            return CheckResult("store", HealthStatus.FAIL, "store", output=str(exc)), None
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        status = HealthStatus.WARN if latency_ms > STORE_LATENCY_WARN_MS else HealthStatus.PASS
        check = CheckResult(
            "store",
            status,
            "store",
            observed_value=latency_ms,
            observed_unit="ms",
            component_type="datastore",
        )
        return check, now

    async def _instance_checks(self, now: float) -> list[CheckResult]:
        registry = self._instances
        if registry is None:
            return []
        live = await registry.list_live(self._config.heartbeat_timeout)
        late_after_s = 2 * self._config.heartbeat_interval
        checks = [self._instance_check(info, now, late_after_s) for info in live]
        if registry.instance_id not in {info.instance_id for info in live}:
            checks.append(
                CheckResult(
                    "instance:heartbeat",
                    HealthStatus.WARN,
                    f"instance:{registry.instance_id}",
                    component_id=registry.instance_id,
                    component_type="system",
                    output="this instance is not registered as live (its beats fail)",
                    details={"version": registry.version},
                )
            )
        return checks

    @staticmethod
    def _instance_check(info: InstanceInfo, now: float, late_after_s: float) -> CheckResult:
        age_s = max(0.0, now - info.last_beat_at)
        late = age_s > late_after_s
        return CheckResult(
            "instance:heartbeat",
            HealthStatus.WARN if late else HealthStatus.PASS,
            f"instance:{info.instance_id}",
            observed_value=round(age_s, 3),
            observed_unit="s",
            component_id=info.instance_id,
            component_type="system",
            time=iso_time(info.last_beat_at),
            output=f"last beat {age_s:.1f}s ago" if late else None,
            details={"version": info.version},
        )

    async def _agents_check(self, workspace_id: str, now: float) -> CheckResult:
        agents: list[AgentInfo] = await self._store.list_agents(workspace_id)
        breakers: Sequence[BreakerInfo] = await asyncio.gather(
            *(self._store.get_breaker(workspace_id, a.agent_id) for a in agents)
        )
        by_status = {status.value: 0 for status in AgentStatus}
        for agent in agents:
            by_status[agent.status.value] += 1
        open_breakers = sum(1 for b in breakers if b.state is not BreakerState.CLOSED)
        offline = by_status[AgentStatus.OFFLINE.value]
        problems = []
        if offline:
            problems.append(f"{offline} agent(s) offline")
        if open_breakers:
            problems.append(f"{open_breakers} circuit breaker(s) open or half-open")
        return CheckResult(
            "agents",
            HealthStatus.WARN if problems else HealthStatus.PASS,
            f"agents:{workspace_id}",
            observed_value=float(len(agents)),
            observed_unit="agents",
            output="; ".join(problems) or None,
            details={"by_status": by_status, "open_breakers": open_breakers},
        )

    async def _queues_check(self, workspace_id: str, now: float) -> CheckResult:
        counts = await self._store.counts(workspace_id)
        depth = {p.value: 0 for p in TaskPriority}
        oldest: dict[str, float | None] = {p.value: None for p in TaskPriority}
        scanned, truncated = 0, False
        cursor: str | None = None
        while counts.pending:
            page = await self._store.list_tasks(
                workspace_id, status=TaskStatus.PENDING, limit=_QUEUE_PAGE_SIZE, cursor=cursor
            )
            for task in page.tasks:
                priority = task.priority.value
                depth[priority] += 1
                since = waiting_since(task, now)
                current = oldest[priority]
                if since is not None and (current is None or since < current):
                    oldest[priority] = since
            scanned += len(page.tasks)
            cursor = page.next_cursor
            if cursor is None:
                break
            if scanned >= QUEUE_SCAN_MAX_TASKS:
                truncated = True
                break
        by_priority = {
            p: {
                "depth": depth[p],
                "oldest_pending_age_s": None if since is None else round(now - since, 3),
            }
            for p, since in oldest.items()
        }
        ages = [now - since for since in oldest.values() if since is not None]
        limit_s = self._thresholds.queue_oldest_pending_max_age_s
        stalled = bool(ages) and max(ages) > limit_s
        return CheckResult(
            "queues",
            HealthStatus.WARN if stalled else HealthStatus.PASS,
            f"queues:{workspace_id}",
            observed_value=float(counts.pending),
            observed_unit="tasks",
            output=(
                f"a claimable task has waited {max(ages):.0f}s (limit {limit_s:g}s)"
                if stalled
                else None
            ),
            details={
                "pending": counts.pending,
                "delayed": counts.delayed,
                "running": counts.running,
                "by_priority": by_priority,
                "scanned_tasks": scanned,
                "scan_truncated": truncated,
            },
        )
