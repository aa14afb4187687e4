"""What one chaos run does: sizes, timings, fault kinds, and the ``ci``/``long`` presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    """The faults the harness injects; each one is undone (restart, continue, restore)."""

    AGENT_KILL = "agent_kill"  # SIGKILL an agent mid-task, then start it again
    SERVER_KILL = "server_kill"  # SIGKILL an ``aragora serve`` instance, then start it again
    AGENT_STOP = "agent_stop"  # SIGSTOP an agent past the heartbeat timeout, then SIGCONT
    REDIS_RESTART = "redis_restart"  # SIGKILL Redis (AOF on), then start it again
    REDIS_PAUSE = "redis_pause"  # SIGSTOP Redis for a few seconds, then SIGCONT
    CONNECTION_DROP = "connection_drop"  # reset every server-to-Redis connection for a while


@dataclass(frozen=True, slots=True)
class Scenario:
    """Settings of one run; every random choice derives from ``seed``.

    The load is ``tasks`` submissions spread evenly over ``load_s``; faults are injected
    during the load, one at a time, with ``fault_gap_s`` between the recovery from one
    and the start of the next. After the load, the run waits up to ``drain_timeout_s``
    for every task to end. ``duration_bound_s`` bounds the whole run, setup included.
    """

    seed: int = 1
    servers: int = 2
    agents: int = 3
    agent_concurrency: int = 4
    tasks: int = 1_200
    load_s: float = 90.0
    duration_bound_s: float = 200.0
    drain_timeout_s: float = 45.0
    failure_rate: float = 0.1
    designed_failure_share: float = 0.03
    duplicate_submit_share: float = 0.1
    handler_min_s: float = 0.02
    handler_max_s: float = 0.3
    fault_kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    fault_gap_min_s: float = 2.0
    fault_gap_max_s: float = 5.0
    heartbeat_timeout_s: float = 3.0
    heartbeat_interval_s: float = 1.0
    task_timeout_s: float = 15.0
    max_retries: int = 10
    recovery_timeout_s: float = 30.0
    submit_concurrency: int = 32

    def __post_init__(self) -> None:
        positive = (
            "servers",
            "agents",
            "agent_concurrency",
            "tasks",
            "load_s",
            "duration_bound_s",
            "drain_timeout_s",
            "heartbeat_timeout_s",
            "heartbeat_interval_s",
            "task_timeout_s",
            "recovery_timeout_s",
            "submit_concurrency",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        for name in ("failure_rate", "designed_failure_share", "duplicate_submit_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if not 0 <= self.handler_min_s <= self.handler_max_s:
            raise ValueError("handler_min_s must be between 0 and handler_max_s")
        if not 0 <= self.fault_gap_min_s <= self.fault_gap_max_s:
            raise ValueError("fault_gap_min_s must be between 0 and fault_gap_max_s")
        if self.heartbeat_interval_s >= self.heartbeat_timeout_s:
            raise ValueError("heartbeat_interval_s must be shorter than heartbeat_timeout_s")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if not self.fault_kinds:
            raise ValueError("fault_kinds must name at least one fault kind")

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fault_kinds"] = [str(k) for k in self.fault_kinds]
        return data


PROFILES: dict[str, Scenario] = {
    # About two minutes on a 2-core machine; every fault kind at least once.
    "ci": Scenario(),
    # Thirty minutes of load; every fault kind many times. 20k tasks is what a shared
    # 2-core machine sustains with every process on it (use --tasks for more).
    "long": Scenario(
        servers=3,
        agents=4,
        agent_concurrency=8,
        tasks=20_000,
        load_s=1_800.0,
        duration_bound_s=2_400.0,
        drain_timeout_s=300.0,
        handler_min_s=0.01,
        handler_max_s=0.1,
    ),
}
"""Named presets for ``--profile``; other options override their fields."""
