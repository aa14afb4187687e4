"""AgentRegistry: agents declare capabilities, heartbeat, and are found by capability."""

from __future__ import annotations

from typing import Any

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import ValidationError
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    HeartbeatResult,
    normalize_capabilities,
    validate_name,
    validate_workspace_id,
)
from aragora.store.base import Store

MAX_CONCURRENT_TASKS_LIMIT = 1024


class AgentRegistry:
    """Validates agent operations and runs each as one store transition."""

    def __init__(self, store: Store, config: ControlPlaneConfig) -> None:
        self._store = store
        self._config = config

    async def register(
        self,
        agent_id: str,
        capabilities: list[str] | tuple[str, ...],
        model: str,
        *,
        workspace_id: str = "default",
        max_concurrent_tasks: int = 1,
        metadata: dict[str, Any] | None = None,
    ) -> AgentInfo:
        """Create or update an agent. Tasks still leased to the same id go back to the queue:
        a process that registers again cannot be running them any more."""
        validate_workspace_id(workspace_id)
        validate_name(agent_id, "agent_id")
        caps = normalize_capabilities(capabilities)
        if not isinstance(model, str) or not model or len(model) > 256:
            raise ValidationError("model", "must be a non-empty string of at most 256 characters")
        if (
            isinstance(max_concurrent_tasks, bool)
            or not isinstance(max_concurrent_tasks, int)
            or not 1 <= max_concurrent_tasks <= MAX_CONCURRENT_TASKS_LIMIT
        ):
            raise ValidationError(
                "max_concurrent_tasks", f"must be an integer from 1 to {MAX_CONCURRENT_TASKS_LIMIT}"
            )
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError("metadata", "must be an object")
        return await self._store.register_agent(
            workspace_id, agent_id, caps, model, max_concurrent_tasks, dict(metadata or {})
        )

    async def heartbeat(
        self, agent_id: str, *, status: AgentStatus | None = None, workspace_id: str = "default"
    ) -> HeartbeatResult:
        """Refresh liveness. ``status=DRAINING`` stops new claims; IDLE or BUSY resumes them."""
        validate_workspace_id(workspace_id)
        validate_name(agent_id, "agent_id")
        if status is AgentStatus.OFFLINE:
            raise ValidationError(
                "status", "an agent goes offline by deregistering, not by heartbeat"
            )
        draining = None if status is None else status is AgentStatus.DRAINING
        return await self._store.heartbeat(workspace_id, agent_id, draining)

    async def deregister(self, agent_id: str, *, workspace_id: str = "default") -> None:
        validate_workspace_id(workspace_id)
        validate_name(agent_id, "agent_id")
        await self._store.deregister_agent(workspace_id, agent_id)

    async def get(self, agent_id: str, *, workspace_id: str = "default") -> AgentInfo:
        validate_workspace_id(workspace_id)
        validate_name(agent_id, "agent_id")
        return await self._store.get_agent(workspace_id, agent_id)

    async def list(
        self,
        *,
        capability: str | None = None,
        status: AgentStatus | None = None,
        workspace_id: str = "default",
    ) -> list[AgentInfo]:
        validate_workspace_id(workspace_id)
        if capability is not None:
            validate_name(capability, "capability")
        return await self._store.list_agents(workspace_id, capability=capability, status=status)
