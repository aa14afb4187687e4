"""ControlPlaneCoordinator: the one facade over registry, scheduler and health.

It owns the store connection and the background reaper. Use it as an async context
manager (or ``create`` / ``close``)::

    async with ControlPlaneCoordinator(ControlPlaneConfig(store_url="sqlite:///cp.db")) as cp:
        await cp.register_agent("agent-1", ["debate"], model="m")
        task_id = await cp.submit_task("debate", {"topic": "x"}, ["debate"])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from aragora.audit.log import AuditLog
from aragora.control_plane.backoff import LoopBackoff
from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.health import HealthMonitor
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    Alert,
    BreakerInfo,
    HeartbeatResult,
    ReapReport,
    SpendReport,
    Task,
    TaskPriority,
    TaskSpec,
    TaskStatus,
    WorkspaceLimits,
    validate_workspace_id,
)
from aragora.control_plane.registry import AgentRegistry
from aragora.control_plane.scheduler import Claimer, TaskScheduler
from aragora.crypto import PayloadCipher
from aragora.store import Store, TaskPage, create_store

logger = logging.getLogger(__name__)


class ControlPlaneCoordinator:
    """High-level operations of the control plane (the API of ADR-009).

    Every method that takes ``workspace_id`` acts only inside that workspace; another
    workspace's task or agent is reported as not found.
    """

    def __init__(
        self,
        config: ControlPlaneConfig | None = None,
        *,
        store: Store | None = None,
        run_reaper: bool = True,
        cipher: PayloadCipher | None = None,
    ) -> None:
        """``cipher`` encrypts task payloads and results at rest (see ``aragora.crypto``;
        ``PayloadCipher.from_env()`` reads ``ARAGORA_ENCRYPTION_KEYS``)."""
        self.config = config or ControlPlaneConfig()
        self.store = store or create_store(self.config)
        self.cipher = cipher
        self.registry = AgentRegistry(self.store, self.config)
        self.scheduler = TaskScheduler(self.store, self.config, cipher)
        self.audit = AuditLog.for_store(self.store)
        self.health = HealthMonitor(self.store, self.config)
        self._alert_hooks: list[Callable[[Alert], None]] = []
        self.on_reaped: list[Callable[[str, ReapReport], None]] = []
        """Listeners called with ``(workspace_id, report)`` after each workspace's reaping
        pass in :meth:`reap`; one that raises is logged and ignored."""
        self.store.add_alert_listener(self._on_alert)
        self._run_reaper = run_reaper
        self._reaper: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    @classmethod
    async def create(cls, config: ControlPlaneConfig | None = None, **kwargs: Any) -> Self:
        coordinator = cls(config, **kwargs)
        await coordinator.start()
        return coordinator

    async def start(self) -> None:
        if self._started:
            return
        await self.store.open()
        self._started = True
        if self._run_reaper:
            self._reaper = asyncio.create_task(self._reap_forever(), name="aragora-reaper")

    async def close(self) -> None:
        """Stop the reaper and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.health.mark_closing()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.audit.close()
        if self._started:
            await self.store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- agents --------------------------------------------------------------------
    async def register_agent(
        self,
        agent_id: str,
        capabilities: list[str] | tuple[str, ...],
        model: str,
        *,
        workspace_id: str = "default",
        max_concurrent_tasks: int = 1,
        metadata: dict[str, Any] | None = None,
    ) -> AgentInfo:
        return await self.registry.register(
            agent_id,
            capabilities,
            model,
            workspace_id=workspace_id,
            max_concurrent_tasks=max_concurrent_tasks,
            metadata=metadata,
        )

    async def heartbeat(
        self, agent_id: str, *, status: AgentStatus | None = None, workspace_id: str = "default"
    ) -> HeartbeatResult:
        return await self.registry.heartbeat(agent_id, status=status, workspace_id=workspace_id)

    async def deregister_agent(self, agent_id: str, *, workspace_id: str = "default") -> None:
        await self.registry.deregister(agent_id, workspace_id=workspace_id)

    async def get_agent(self, agent_id: str, *, workspace_id: str = "default") -> AgentInfo:
        return await self.registry.get(agent_id, workspace_id=workspace_id)

    async def list_agents(
        self,
        capability: str | None = None,
        status: AgentStatus | None = None,
        *,
        workspace_id: str = "default",
    ) -> list[AgentInfo]:
        return await self.registry.list(
            capability=capability, status=status, workspace_id=workspace_id
        )

    async def get_breaker(self, agent_id: str, *, workspace_id: str = "default") -> BreakerInfo:
        return await self.health.breaker(agent_id, workspace_id=workspace_id)

    # -- tasks ---------------------------------------------------------------------
    async def submit_task(
        self,
        task_type: str,
        payload: Any,
        required_capabilities: list[str] | tuple[str, ...] = (),
        priority: TaskPriority | str = TaskPriority.NORMAL,
        *,
        workspace_id: str = "default",
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        metadata: dict[str, Any] | None = None,
        cost_estimate: float | None = None,
    ) -> str:
        """Queue a task and return its id (the first task's id for a repeated idempotency key).

        ``cost_estimate`` is reserved against the workspace budget until the task ends."""
        task = await self.scheduler.submit(
            task_type,
            payload,
            required_capabilities,
            priority,
            workspace_id=workspace_id,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            metadata=metadata,
            cost_estimate=cost_estimate,
        )
        return task.id

    async def submit_tasks(
        self, tasks: Sequence[TaskSpec], *, workspace_id: str = "default"
    ) -> list[str | ControlPlaneError]:
        """Submit a batch in as few round trips as the store allows: each item's task id,
        or the error (quota, budget) that refused that one task. Every task is validated
        before anything is written."""
        outcomes = await self.scheduler.submit_many(tasks, workspace_id=workspace_id)
        return [o if isinstance(o, ControlPlaneError) else o.id for o in outcomes]

    async def claim_tasks(
        self,
        agent_id: str,
        *,
        max_tasks: int,
        wait_s: float = 0.0,
        workspace_id: str = "default",
    ) -> list[Task]:
        """Lease up to ``max_tasks`` tasks in one store operation (at most the agent's
        free capacity), waiting up to ``wait_s`` for at least one."""
        return await self.scheduler.claim_many(
            agent_id, max_tasks=max_tasks, wait_s=wait_s, workspace_id=workspace_id
        )

    def claimer(
        self, agent_id: str, *, workspace_id: str = "default"
    ) -> AbstractAsyncContextManager[Claimer]:
        """For a claim loop: ``async with cp.claimer(agent) as c: await c.claim(k, wait_s=1)``.

        Same leases as ``claim_tasks``, but the claimer keeps listening between claims,
        so after a claim that came back short the next one first waits (up to its
        ``wait_s``) for news of work instead of asking the store again at once."""
        return self.scheduler.claimer(agent_id, workspace_id=workspace_id)

    async def complete_tasks(
        self,
        completions: Sequence[tuple[str, Any, str]],
        *,
        workspace_id: str = "default",
        costs: Sequence[float | None] | None = None,
    ) -> list[Task | ControlPlaneError]:
        """Complete ``(task_id, result, lease_token)`` items in as few round trips as the
        store allows; each item is the completed task or the error that refused it.
        ``costs`` optionally gives each item's reported cost."""
        return await self.scheduler.complete_many(
            completions, workspace_id=workspace_id, costs=costs
        )

    async def fail_tasks(
        self, failures: Sequence[tuple[str, str, str, bool]], *, workspace_id: str = "default"
    ) -> list[Task | ControlPlaneError]:
        """Fail ``(task_id, error, lease_token, retryable)`` items, each its own atomic
        step: each item is the task afterwards or the error that refused it."""
        return await self.scheduler.fail_many(failures, workspace_id=workspace_id)

    async def claim_task(
        self, agent_id: str, *, wait_s: float = 0.0, workspace_id: str = "default"
    ) -> Task | None:
        return await self.scheduler.claim(agent_id, wait_s=wait_s, workspace_id=workspace_id)

    async def complete_task(
        self,
        task_id: str,
        result: Any,
        *,
        lease_token: str,
        cost: float | None = None,
        workspace_id: str = "default",
    ) -> Task:
        return await self.scheduler.complete(
            task_id, result, lease_token=lease_token, cost=cost, workspace_id=workspace_id
        )

    async def fail_task(
        self,
        task_id: str,
        error: str,
        *,
        lease_token: str,
        retryable: bool = True,
        workspace_id: str = "default",
    ) -> Task:
        return await self.scheduler.fail(
            task_id, error, lease_token=lease_token, retryable=retryable, workspace_id=workspace_id
        )

    async def cancel_task(self, task_id: str, *, workspace_id: str = "default") -> Task:
        return await self.scheduler.cancel(task_id, workspace_id=workspace_id)

    async def retry_task(self, task_id: str, *, workspace_id: str = "default") -> Task:
        return await self.scheduler.retry(task_id, workspace_id=workspace_id)

    async def get_task(self, task_id: str, *, workspace_id: str = "default") -> Task:
        return await self.scheduler.get(task_id, workspace_id=workspace_id)

    async def get_tasks(
        self, task_ids: Sequence[str], *, workspace_id: str = "default"
    ) -> list[Task | None]:
        """Up to 1000 tasks in one store operation, in the order asked; ``None`` for an
        id that is unknown (or already cleaned up after its result TTL)."""
        return await self.scheduler.get_many(task_ids, workspace_id=workspace_id)

    async def list_tasks(
        self,
        status: TaskStatus | None = None,
        *,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        workspace_id: str = "default",
    ) -> TaskPage:
        return await self.scheduler.list(
            status=status,
            task_type=task_type,
            limit=limit,
            cursor=cursor,
            workspace_id=workspace_id,
        )

    async def wait_for_task(
        self, task_id: str, timeout: float, *, workspace_id: str = "default"
    ) -> Task:
        """The task once terminal, whatever its outcome; TimeoutError when the wait ends."""
        return await self.scheduler.wait(task_id, timeout, workspace_id=workspace_id)

    async def wait_for_result(
        self, task_id: str, timeout: float, *, workspace_id: str = "default"
    ) -> Any:
        return await self.scheduler.wait_for_result(task_id, timeout, workspace_id=workspace_id)

    # -- limits, budgets and alerts ----------------------------------------------------
    async def set_workspace_limits(self, workspace_id: str, limits: WorkspaceLimits) -> None:
        """Quotas and budget that every instance enforces inside the guarded transitions."""
        validate_workspace_id(workspace_id)
        await self.store.set_workspace_limits(workspace_id, limits)

    async def get_workspace_limits(self, workspace_id: str) -> WorkspaceLimits:
        validate_workspace_id(workspace_id)
        return await self.store.get_workspace_limits(workspace_id)

    async def get_spend(self, workspace_id: str = "default") -> SpendReport:
        """Reserved and spent cost of the current budget period, by task type and model."""
        validate_workspace_id(workspace_id)
        return await self.store.get_spend(workspace_id)

    def add_alert_hook(self, hook: Callable[[Alert], None]) -> None:
        """Call ``hook`` for every alert raised through this coordinator (e.g. budget soft
        limit reached). Alerts are always logged too."""
        self._alert_hooks.append(hook)

    def remove_alert_hook(self, hook: Callable[[Alert], None]) -> None:
        """Stop calling ``hook`` (added by :meth:`add_alert_hook`); no error if absent."""
        with contextlib.suppress(ValueError):
            self._alert_hooks.remove(hook)

    def _on_alert(self, alert: Alert) -> None:
        logger.warning(
            "alert %s in workspace %s: %s", alert.kind, alert.workspace_id, alert.details
        )
        for hook in self._alert_hooks:
            try:
                hook(alert)
            except Exception:
                logger.exception("alert hook %r failed", hook)

    # -- maintenance ---------------------------------------------------------------
    async def reap(self) -> ReapReport:
        """One reaping pass over every workspace; safe to run on many instances at once."""
        total = ReapReport()
        for workspace_id in await self.store.list_workspaces():
            report = await self.store.reap(workspace_id)
            for listener in tuple(self.on_reaped):
                try:
                    listener(workspace_id, report)
                except Exception:
                    logger.exception("reap listener %r failed", listener)
            total = ReapReport(
                agents_offline=total.agents_offline + report.agents_offline,
                tasks_requeued=total.tasks_requeued + report.tasks_requeued,
                tasks_failed=total.tasks_failed + report.tasks_failed,
                tasks_promoted=total.tasks_promoted + report.tasks_promoted,
                tasks_expired=total.tasks_expired + report.tasks_expired,
            )
        return total

    async def _reap_forever(self) -> None:
        backoff = LoopBackoff(
            "reaper",
            self.config.effective_reap_interval_s,
            max_s=self.config.loop_backoff_max_s,
            log=logger,
        )
        while True:
            try:
                await self.reap()
            except ControlPlaneError as exc:
                delay_s = backoff.failed(exc)
            else:
                delay_s = backoff.succeeded()
            await asyncio.sleep(delay_s)
