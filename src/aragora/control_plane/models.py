"""Value objects of the control plane: tasks, agents, breakers and their states.

All are frozen dataclasses; times are seconds since the epoch on the store's clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aragora.control_plane.errors import ValidationError


class TaskPriority(StrEnum):
    """Scheduling tier. Strict order between tiers, FIFO within one."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for CRITICAL up to 3 for LOW: lower ranks are claimed first."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> TaskPriority:
        return _PRIORITY_BY_RANK[rank]

    @classmethod
    def parse(cls, value: str | TaskPriority, field: str = "priority") -> TaskPriority:
        """Accept a member or its name in any case; anything else is a ValidationError."""
        if isinstance(value, TaskPriority):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        allowed = ", ".join(p.value for p in cls)
        raise ValidationError(field, f"unknown priority {value!r}; expected one of {allowed}")


_PRIORITY_RANK = {p: i for i, p in enumerate(TaskPriority)}
_PRIORITY_BY_RANK = dict(enumerate(TaskPriority))


class TaskStatus(StrEnum):
    """Where a task is. PENDING includes a task waiting out a retry backoff."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class AgentStatus(StrEnum):
    """IDLE and BUSY follow from the tasks an agent holds; DRAINING claims nothing new."""

    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    OFFLINE = "offline"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The error of one failed attempt."""

    attempt: int
    error: str
    agent_id: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "error": self.error,
            "agent_id": self.agent_id,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptError:
        return cls(
            attempt=int(data["attempt"]),
            error=str(data["error"]),
            agent_id=data.get("agent_id"),
            at=float(data["at"]),
        )


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work and where it is in its life.

    ``attempt`` is 0 before the first claim, 1 on the first claim, and grows by one on
    every re-claim. ``lease_token`` is set while RUNNING and must be presented to
    complete or fail the attempt. ``available_at`` is set while a PENDING task waits
    out a retry backoff.
    """

    id: str
    task_type: str
    payload: Any
    priority: TaskPriority
    status: TaskStatus
    required_capabilities: tuple[str, ...]
    workspace_id: str
    attempt: int
    max_retries: int
    timeout_s: float
    created_at: float
    lease_token: str | None = None
    agent_id: str | None = None
    result: Any = None
    error: str | None = None
    errors: tuple[AttemptError, ...] = ()
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float | None = None
    available_at: float | None = None
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    cost_estimate: float | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of a batch submission (``submit_tasks``); the fields mean what the
    arguments of ``submit_task`` mean."""

    task_type: str
    payload: Any
    required_capabilities: tuple[str, ...] | list[str] = ()
    priority: TaskPriority | str = TaskPriority.NORMAL
    idempotency_key: str | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    metadata: dict[str, Any] | None = None
    cost_estimate: float | None = None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """A registered agent as the registry sees it."""

    agent_id: str
    workspace_id: str
    capabilities: tuple[str, ...]
    model: str
    status: AgentStatus
    max_concurrent_tasks: int
    running_task_ids: tuple[str, ...]
    registered_at: float
    last_heartbeat_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """What an agent learns from a heartbeat: its state and tasks cancelled under it."""

    agent: AgentInfo
    cancelled_task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BreakerInfo:
    """The circuit breaker of one agent, over the rolling window."""

    agent_id: str
    state: BreakerState
    calls: int
    failures: int
    opened_at: float | None
    half_open_in_flight: int

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class TaskCounts:
    """How many tasks of a workspace are in each place. Delayed tasks count as pending too."""

    pending: int
    delayed: int
    running: int
    completed: int
    failed: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.pending + self.running + self.completed + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one reaping pass over a workspace did."""

    agents_offline: int = 0
    tasks_requeued: int = 0
    tasks_failed: int = 0
    tasks_promoted: int = 0
    tasks_expired: int = 0


class BudgetPeriod(StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class WorkspaceLimits:
    """Limits the store enforces inside the transition they guard; ``None`` is unlimited.

    ``budget`` caps spent plus reserved cost per ``budget_period`` (UTC day or month);
    crossing ``budget_soft_ratio`` of it raises a ``budget.soft_limit`` alert once a period.
    """

    max_agents: int | None = None
    max_pending_tasks: int | None = None
    max_running_tasks: int | None = None
    max_payload_bytes: int | None = None
    budget: float | None = None
    budget_period: BudgetPeriod = BudgetPeriod.MONTHLY
    budget_soft_ratio: float = 0.8


@dataclass(frozen=True, slots=True)
class SpendReport:
    """Cost of a workspace in one budget period, in total and by task type and agent model."""

    period: str
    budget: float | None
    reserved: float
    spent: float
    by_task_type: dict[str, float]
    by_model: dict[str, float]


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should hear about, raised by a store transition."""

    kind: str
    workspace_id: str
    at: float
    details: dict[str, Any] = field(default_factory=dict)


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_WORKSPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_TASK_TYPE_LENGTH = 128
MAX_CAPABILITIES = 32


def validate_workspace_id(value: str) -> str:
    if not isinstance(value, str) or not _WORKSPACE_RE.fullmatch(value):
        raise ValidationError(
            "workspace_id",
            "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit",
        )
    return value


def validate_name(value: object, field: str) -> str:
    """Agent ids, task types and capabilities: 1-128 characters, no spaces, commas or braces."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be a non-empty string")
    if len(value) > MAX_TASK_TYPE_LENGTH:
        raise ValidationError(field, f"must be at most {MAX_TASK_TYPE_LENGTH} characters")
    if not _NAME_RE.fullmatch(value):
        raise ValidationError(
            field,
            "may hold only letters, digits and '_', '.', ':', '@', '-', "
            "starting with a letter or digit",
        )
    return value


def normalize_capabilities(values: object, field: str = "capabilities") -> tuple[str, ...]:
    """Sorted, de-duplicated tuple of valid capability names."""
    if isinstance(values, str) or not isinstance(values, list | tuple | set | frozenset):
        raise ValidationError(field, "must be a list of strings")
    caps = sorted({validate_name(v, field) for v in values})
    if len(caps) > MAX_CAPABILITIES:
        raise ValidationError(field, f"at most {MAX_CAPABILITIES} capabilities")
    return tuple(caps)
