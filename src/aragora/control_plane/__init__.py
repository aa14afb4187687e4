"""The control plane: agent registry, task scheduler and health behind one coordinator."""

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import (
    AgentNotFoundError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    PayloadTooLargeError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.control_plane.health import HealthMonitor
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
    TaskStatus,
)

__all__ = [
    "AgentInfo",
    "AgentNotFoundError",
    "AgentStatus",
    "AttemptError",
    "BreakerInfo",
    "BreakerState",
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
    "StoreUnavailableError",
    "Task",
    "TaskCancelledError",
    "TaskCounts",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskPriority",
    "TaskStatus",
    "ValidationError",
]
