"""The one exception tree of the control plane.

Everything the control plane raises on purpose derives from ``ControlPlaneError``;
errors of Redis and SQLite are translated at the store boundary into
``StoreUnavailableError`` so callers never have to import a driver::

    ControlPlaneError
    ├── ValidationError            bad input: names the field and the reason; nothing changed
    │   └── PayloadTooLargeError   payload or result over max_payload_bytes
    ├── NotFoundError
    │   ├── TaskNotFoundError      unknown task (or another workspace's: never told apart)
    │   └── AgentNotFoundError     unknown agent (or another workspace's)
    ├── ConflictError              the request does not fit the object's current state
    │   ├── LeaseLostError         stale or wrong lease token: the attempt is no longer yours
    │   └── InvalidStateError      e.g. retry of a task that is not FAILED
    ├── QuotaExceededError         a workspace limit (agents, pending, running, payload) is reached
    ├── BudgetExceededError        the workspace's budget for the period cannot cover the task
    ├── TaskFailedError            wait_for_result: the task ended FAILED (carries every error)
    ├── TaskCancelledError         wait_for_result / complete / fail: the task was cancelled
    ├── StoreUnavailableError      the store could not be reached or answered with an error
    └── ConfigError                a configuration value is invalid

``TimeoutError`` (the builtin) is raised by ``wait_for_result`` when the wait ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ControlPlaneError(Exception):
    """Base class of every error the control plane raises on purpose."""


class ValidationError(ControlPlaneError, ValueError):
    """Input was rejected before anything was written."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFoundError(ControlPlaneError, LookupError):
    """The object does not exist in the caller's workspace."""


class TaskNotFoundError(NotFoundError):
    """No such task in this workspace."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class AgentNotFoundError(NotFoundError):
    """No such agent in this workspace."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} not found")
        self.agent_id = agent_id


class ConflictError(ControlPlaneError):
    """The request does not fit the current state of the object."""


class LeaseLostError(ConflictError):
    """The lease token is stale or wrong; the attempt belongs to nobody or to someone else."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"lease on task {task_id!r} is lost (stale or wrong lease token)")
        self.task_id = task_id


class InvalidStateError(ConflictError):
    """The operation is not allowed in the object's current state."""


class TaskFailedError(ControlPlaneError):
    """The task ended FAILED; ``errors`` holds the error of every attempt, oldest first."""

    def __init__(self, task_id: str, errors: Sequence[Any]) -> None:
        last = errors[-1] if errors else None
        super().__init__(f"task {task_id!r} failed after {len(errors)} attempt(s): {last}")
        self.task_id = task_id
        self.errors = list(errors)


class TaskCancelledError(ControlPlaneError):
    """The task was cancelled."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} was cancelled")
        self.task_id = task_id


class StoreUnavailableError(ControlPlaneError):
    """The store could not be reached, or failed; the operation may not have happened."""


class ConfigError(ControlPlaneError, ValueError):
    """A configuration value is invalid."""


class PayloadTooLargeError(ValidationError):
    """A payload or result is larger than ``max_payload_bytes``."""

    def __init__(self, field: str, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            field, f"is {size_bytes} bytes encoded, over the limit of {limit_bytes} bytes"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class QuotaExceededError(ControlPlaneError):
    """A workspace limit is reached; nothing was written."""

    def __init__(self, quota: str, limit: float, current: float) -> None:
        super().__init__(f"quota {quota} reached: limit {limit:g}, current {current:g}")
        self.quota = quota
        self.limit = limit
        self.current = current


class BudgetExceededError(ControlPlaneError):
    """The workspace's budget for the current period cannot cover the task's estimate."""

    def __init__(self, limit: float, used: float, estimate: float) -> None:
        super().__init__(
            f"budget exceeded: limit {limit:g}, spent and reserved {used:g}, estimate {estimate:g}"
        )
        self.limit = limit
        self.used = used
        self.estimate = estimate
