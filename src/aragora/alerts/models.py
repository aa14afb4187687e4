"""Alert vocabulary: kinds, severities, the notification sent to sinks, and thresholds.

An alert is identified by a stable *key* such as ``agent_offline:<ws>:<agent>``: the
key names the condition, so every instance evaluating the same condition talks about
the same alert, and its state (firing or resolved) kept in the store decides which one
instance sends each notification.

Two shapes of alert exist:

* *condition* alerts (agent offline, breaker open, queue stalled, instance lost) fire
  when the condition starts and resolve when it ends; a condition that comes back
  fires again (a new incident).
* *event* alerts (task dead-lettered, budget soft limit) fire once per key and never
  resolve; their state is forgotten after ``event_retention_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aragora.control_plane.errors import ConfigError


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertKind(StrEnum):
    """The rules the engine evaluates; each is also the first part of its alerts' keys."""

    AGENT_OFFLINE = "agent_offline"
    BREAKER_OPEN = "breaker_open"
    TASK_DEAD_LETTERED = "task_dead_lettered"
    QUEUE_STALLED = "queue_stalled"
    INSTANCE_LOST = "instance_lost"
    BUDGET_SOFT_LIMIT = "budget_soft_limit"
    STORE_UNREACHABLE = "store_unreachable"


def alert_key(kind: str, *parts: str) -> str:
    """``<kind>:<part>:<part>...``: workspace ids hold no ``:``, so ``<kind>:<ws>:`` is a
    prefix that only that workspace's alerts of that kind share."""
    return ":".join((kind, *parts))


@dataclass(frozen=True, slots=True)
class Condition:
    """Something a rule found true now: the alert it fires (or keeps firing)."""

    key: str
    kind: str
    severity: AlertSeverity
    summary: str
    workspace_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The stored state of one alert."""

    key: str
    kind: str
    status: AlertStatus
    severity: AlertSeverity
    summary: str
    workspace_id: str | None
    details: dict[str, Any]
    fired_at: float
    resolved_at: float | None
    one_shot: bool


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One notification: an alert started firing or resolved.

    ``at`` is when the transition happened on the store clock (the local clock for
    ``store_unreachable``, which cannot be recorded in the store); ``instance_id`` names
    the instance that sent it.
    """

    key: str
    kind: str
    status: AlertStatus
    severity: AlertSeverity
    summary: str
    workspace_id: str | None
    details: dict[str, Any]
    fired_at: float
    resolved_at: float | None
    at: float
    instance_id: str | None = None

    @classmethod
    def from_record(cls, record: AlertRecord, at: float, instance_id: str | None) -> AlertEvent:
        return cls(
            key=record.key,
            kind=record.kind,
            status=record.status,
            severity=record.severity,
            summary=record.summary,
            workspace_id=record.workspace_id,
            details=record.details,
            fired_at=record.fired_at,
            resolved_at=record.resolved_at,
            at=at,
            instance_id=instance_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of a webhook delivery (``version`` 1)."""
        return {
            "version": 1,
            "key": self.key,
            "kind": self.kind,
            "status": self.status.value,
            "severity": self.severity.value,
            "summary": self.summary,
            "workspace_id": self.workspace_id,
            "details": self.details,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "at": self.at,
            "instance_id": self.instance_id,
        }


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """When the rules fire and how much they read per evaluation.

    ``evaluate_interval_s``: how often each engine evaluates every rule.
    ``queue_oldest_pending_max_age_s``: a workspace's queue is *stalled* once a claimable
    task has waited this long. ``queue_scan_max_tasks`` bounds the pending tasks read to
    find the oldest (the age is a lower bound beyond it).
    ``dead_letter_lookback_s``: tasks that ended FAILED within this window are reported;
    ``dead_letter_scan_max_tasks`` bounds the failed tasks read per workspace.
    ``instance_timeout_s``: an instance silent this long is lost.
    ``store_unreachable_after_failures``: consecutive failed evaluations (the store did
    not answer) before this instance reports the store unreachable.
    ``event_retention_s`` / ``resolved_retention_s``: how long the state of event alerts
    and of resolved alerts is kept (an event alert cannot fire twice meanwhile, so this
    must exceed ``dead_letter_lookback_s``).
    ``disabled_rules``: kinds (``AlertKind`` values) not evaluated.
    """

    evaluate_interval_s: float = 15.0
    queue_oldest_pending_max_age_s: float = 300.0
    queue_scan_max_tasks: int = 10_000
    dead_letter_lookback_s: float = 3_600.0
    dead_letter_scan_max_tasks: int = 1_000
    instance_timeout_s: float = 30.0
    store_unreachable_after_failures: int = 2
    event_retention_s: float = 7 * 86_400.0
    resolved_retention_s: float = 7 * 86_400.0
    disabled_rules: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in (
            "evaluate_interval_s",
            "queue_oldest_pending_max_age_s",
            "dead_letter_lookback_s",
            "instance_timeout_s",
            "event_retention_s",
            "resolved_retention_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number greater than 0")
        for name in (
            "queue_scan_max_tasks",
            "dead_letter_scan_max_tasks",
            "store_unreachable_after_failures",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer of at least 1")
        if self.event_retention_s <= self.dead_letter_lookback_s:
            raise ConfigError("event_retention_s must be longer than dead_letter_lookback_s")
        unknown = set(self.disabled_rules) - {k.value for k in AlertKind}
        if unknown:
            raise ConfigError(f"disabled_rules names unknown rules: {sorted(unknown)}")
