"""JSON shapes of tasks, agents and breakers, shared by the HTTP API and its client.

Times are epoch seconds (floats). A task's ``lease_token`` is a capability to end the
attempt, so it is only included where the caller is the agent that claimed it.
"""

from __future__ import annotations

from typing import Any

from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    AttemptError,
    BreakerInfo,
    Task,
    TaskPriority,
    TaskStatus,
)


def task_to_dict(task: Task, *, include_lease: bool = False) -> dict[str, Any]:
    return {
        "id": task.id,
        "task_type": task.task_type,
        "payload": task.payload,
        "priority": task.priority.value,
        "status": task.status.value,
        "required_capabilities": list(task.required_capabilities),
        "workspace_id": task.workspace_id,
        "attempt": task.attempt,
        "max_retries": task.max_retries,
        "timeout_s": task.timeout_s,
        "lease_token": task.lease_token if include_lease else None,
        "agent_id": task.agent_id,
        "result": task.result,
        "error": task.error,
        "errors": [e.to_dict() for e in task.errors],
        "created_at": task.created_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "lease_expires_at": task.lease_expires_at,
        "available_at": task.available_at,
        "idempotency_key": task.idempotency_key,
        "metadata": task.metadata,
        "cost": task.cost,
        "cost_estimate": task.cost_estimate,
    }


def task_from_dict(data: dict[str, Any]) -> Task:
    return Task(
        id=data["id"],
        task_type=data["task_type"],
        payload=data.get("payload"),
        priority=TaskPriority(data["priority"]),
        status=TaskStatus(data["status"]),
        required_capabilities=tuple(data.get("required_capabilities", ())),
        workspace_id=data["workspace_id"],
        attempt=int(data["attempt"]),
        max_retries=int(data["max_retries"]),
        timeout_s=float(data["timeout_s"]),
        created_at=float(data["created_at"]),
        lease_token=data.get("lease_token"),
        agent_id=data.get("agent_id"),
        result=data.get("result"),
        error=data.get("error"),
        errors=tuple(AttemptError.from_dict(e) for e in data.get("errors", ())),
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        lease_expires_at=data.get("lease_expires_at"),
        available_at=data.get("available_at"),
        idempotency_key=data.get("idempotency_key"),
        metadata=data.get("metadata") or {},
        cost=data.get("cost"),
        cost_estimate=data.get("cost_estimate"),
    )


def agent_to_dict(agent: AgentInfo) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "workspace_id": agent.workspace_id,
        "capabilities": list(agent.capabilities),
        "model": agent.model,
        "status": agent.status.value,
        "max_concurrent_tasks": agent.max_concurrent_tasks,
        "running_task_ids": list(agent.running_task_ids),
        "registered_at": agent.registered_at,
        "last_heartbeat_at": agent.last_heartbeat_at,
        "metadata": agent.metadata,
    }


def agent_from_dict(data: dict[str, Any]) -> AgentInfo:
    return AgentInfo(
        agent_id=data["agent_id"],
        workspace_id=data["workspace_id"],
        capabilities=tuple(data.get("capabilities", ())),
        model=data["model"],
        status=AgentStatus(data["status"]),
        max_concurrent_tasks=int(data["max_concurrent_tasks"]),
        running_task_ids=tuple(data.get("running_task_ids", ())),
        registered_at=float(data["registered_at"]),
        last_heartbeat_at=float(data["last_heartbeat_at"]),
        metadata=data.get("metadata") or {},
    )


def breaker_to_dict(breaker: BreakerInfo) -> dict[str, Any]:
    return {
        "agent_id": breaker.agent_id,
        "state": breaker.state.value,
        "calls": breaker.calls,
        "failures": breaker.failures,
        "error_rate": breaker.error_rate,
        "opened_at": breaker.opened_at,
        "half_open_in_flight": breaker.half_open_in_flight,
    }
