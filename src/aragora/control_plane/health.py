"""HealthMonitor: circuit breakers per agent, and liveness/readiness checks.

Breaker state lives in the store (it is updated by the same atomic operation that
ends an attempt and consulted by the one that claims), so every instance sees the
same breaker. This module reads it and judges the health of the control plane.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.models import BreakerInfo, validate_name, validate_workspace_id
from aragora.store.base import Store


class HealthStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One component's health (shaped after the draft "application/health+json")."""

    component: str
    status: HealthStatus
    observed_value: float | None = None
    observed_unit: str | None = None
    output: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: HealthStatus
    checks: tuple[HealthCheck, ...]


class HealthMonitor:
    """Reads breakers and answers liveness and readiness."""

    def __init__(self, store: Store, config: ControlPlaneConfig) -> None:
        self._store = store
        self._config = config
        self._closing = False

    def mark_closing(self) -> None:
        """Readiness fails from now on: the coordinator is shutting down."""
        self._closing = True

    async def breaker(self, agent_id: str, *, workspace_id: str = "default") -> BreakerInfo:
        validate_workspace_id(workspace_id)
        validate_name(agent_id, "agent_id")
        return await self._store.get_breaker(workspace_id, agent_id)

    def liveness(self) -> HealthCheck:
        """The process is running its event loop; nothing external is consulted."""
        return HealthCheck("process", HealthStatus.PASS)

    async def readiness(self) -> HealthCheck:
        """The store answers and the coordinator is not shutting down."""
        if self._closing:
            return HealthCheck("store", HealthStatus.FAIL, output="shutting down")
        started = time.perf_counter()
        try:
            await self._store.ping()
        except ControlPlaneError as exc:
            return HealthCheck("store", HealthStatus.FAIL, output=str(exc))
        latency_ms = (time.perf_counter() - started) * 1000
        return HealthCheck(
            "store", HealthStatus.PASS, observed_value=latency_ms, observed_unit="ms"
        )

    async def report(self, *, workspace_id: str = "default") -> HealthReport:
        """Store readiness plus agent and queue figures of one workspace."""
        store_check = await self.readiness()
        checks = [self.liveness(), store_check]
        if store_check.status is HealthStatus.PASS:
            agents = await self._store.list_agents(workspace_id)
            by_status: dict[str, int] = {}
            for agent in agents:
                by_status[agent.status.value] = by_status.get(agent.status.value, 0) + 1
            checks.append(HealthCheck("agents", HealthStatus.PASS, details=by_status))
            counts = await self._store.counts(workspace_id)
            checks.append(
                HealthCheck(
                    "queue",
                    HealthStatus.PASS,
                    observed_value=float(counts.pending),
                    observed_unit="tasks",
                    details={
                        "pending": counts.pending,
                        "delayed": counts.delayed,
                        "running": counts.running,
                    },
                )
            )
        worst = max((c.status for c in checks), key=_SEVERITY.__getitem__)
        return HealthReport(worst, tuple(checks))


_SEVERITY = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}
