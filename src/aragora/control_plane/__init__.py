"""The control plane: agent registry, task scheduler and health behind one coordinator.

The coordinator and health monitor are imported on first use, so that the stores can
import this package's models, errors and config without an import cycle.
"""

from typing import TYPE_CHECKING, Any

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import (
    AgentNotFoundError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    AttemptError,
    BreakerInfo,
    BreakerState,
    HeartbeatResult,
    Task,
    TaskCounts,
    TaskPriority,
    TaskSpec,
    TaskStatus,
)

__all__ = [
    "AgentInfo",
    "AgentNotFoundError",
    "AgentStatus",
    "AttemptError",
    "BreakerInfo",
    "BreakerState",
    "BudgetExceededError",
    "ConfigError",
    "ConflictError",
    "ControlPlaneConfig",
    "ControlPlaneCoordinator",
    "ControlPlaneError",
    "HealthMonitor",
    "HeartbeatResult",
    "InvalidStateError",
    "LeaseLostError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "StoreUnavailableError",
    "Task",
    "TaskCancelledError",
    "TaskCounts",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskPriority",
    "TaskSpec",
    "TaskStatus",
    "ValidationError",
]

if TYPE_CHECKING:
    from aragora.control_plane.coordinator import ControlPlaneCoordinator
    from aragora.control_plane.health import HealthMonitor


def __getattr__(name: str) -> Any:
    if name == "ControlPlaneCoordinator":
        from aragora.control_plane.coordinator import ControlPlaneCoordinator

        return ControlPlaneCoordinator
    if name == "HealthMonitor":
        from aragora.control_plane.health import HealthMonitor

        return HealthMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
