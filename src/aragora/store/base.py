"""The Store interface: every state transition of the control plane as one atomic operation.

A store implements the domain operations below, each as ONE atomic step (one Lua
script on Redis, one SQL transaction on SQLite); nothing here may be built from a
read followed by a write in another round trip. The coordinator validates input and
then calls exactly one of these per transition. Semantics shared by all stores (the
contract suite in ``tests/store/`` checks every line):

Places. A task is in exactly one place: pending (claimable now, or *delayed* while it
waits out a retry backoff, ``available_at`` set), running (leased to one agent), or
terminal (completed, failed, cancelled).

Claim. Only an agent that is registered, not OFFLINE, not DRAINING, below its
``max_concurrent_tasks`` and whose breaker admits it may claim. It gets the pending
task of its workspace with the lowest priority rank, FIFO (submit order) within a rank,
among tasks whose required capabilities are a subset of its own. Due delayed tasks are
promoted first. The claim sets status RUNNING, ``attempt += 1``, a fresh
``lease_token``, ``agent_id``, ``started_at`` and ``lease_expires_at = now + timeout_s``.

Attempt end. ``complete``/``fail`` need the current lease token of a RUNNING task, else
``LeaseLostError`` (``TaskCancelledError`` if the task was cancelled meanwhile) and
nothing changes. A failed attempt (``fail``, lease expiry, agent lost or re-registered)
appends ``AttemptError(attempt, error, agent_id, at)`` to ``errors`` and sets ``error``;
if retryable and ``attempt < attempts_allowed`` (``1 + max_retries``, extended by a
manual retry) the task becomes pending again after
``retry_delay_s(attempt, ...)`` (see ``rules``), else FAILED. Every attempt end
records a breaker outcome for the agent (success for complete, failure otherwise;
cancel records nothing) and frees the agent's slot.

Cancel. Pending or delayed: CANCELLED at once. Running: CANCELLED at once, the lease is
void and the task id is queued for the agent, who learns it from its next heartbeat.
Already cancelled: returned unchanged. Completed or failed: ``InvalidStateError``.

Retry. Only FAILED: back to pending at once with ``attempts_allowed = attempt + 1 +
max_retries``; ``error`` and ``finished_at`` cleared, ``errors`` kept.

Agents. ``register_agent`` creates or updates; any tasks still leased to that id go
back through the failed-attempt path (error "agent re-registered"), and the agent is
back in service (not OFFLINE, not DRAINING). ``heartbeat`` refreshes liveness, brings an
OFFLINE agent back, sets or clears DRAINING, and returns (and forgets) the ids of its
tasks cancelled while running. ``deregister_agent`` removes the agent and sends its
tasks through the failed-attempt path ("agent deregistered").

Limits (``set_workspace_limits``), enforced inside the guarded transition so they hold
across instances: ``submit`` refuses (``QuotaExceededError``) a payload over
``max_payload_bytes`` (``NewTask.payload_bytes``, the plaintext JSON size) and a task
beyond ``max_pending_tasks`` (pending incl. delayed); ``register_agent`` refuses a new
agent beyond ``max_agents``; ``claim`` gives nothing while ``max_running_tasks`` tasks run.

Budget. ``submit`` reserves ``cost_estimate`` in the current period (``rules.
budget_period_key``) and refuses (``BudgetExceededError``) when spent + reserved + the
estimate would pass ``budget``, or spent + reserved already reached it. ``complete``
settles: the reservation is returned and the reported cost (the estimate when none is
reported) is added to the period's spend, by task type and by the agent's model. A task
that ends FAILED or CANCELLED returns its reservation. A reservation ends with its task
or with its period. Crossing ``budget_soft_ratio`` raises one ``budget.soft_limit`` alert
per period through ``add_alert_listener``.

Reap (idempotent, safe on many instances at once): agents whose last heartbeat is
older than ``heartbeat_timeout`` become OFFLINE and their tasks go through the
failed-attempt path ("agent offline"); running tasks past ``lease_expires_at`` too
("timed out"); due delayed tasks are promoted; terminal tasks finished more than
``result_ttl_s`` ago are deleted with their idempotency key.

Notifications: a store wakes ``ready_channel(ws)`` watchers whenever a task of ``ws``
may have become claimable and ``task_channel(ws, id)`` watchers when it turned
terminal, also when the change happened in another process. A task channel's
notification may carry the terminal ``Task`` as it was at that moment
(``Watch.take_value``); a waiter may use it instead of reading the task again.

Reads (``get_task``, ``get_tasks``, ``list_tasks``, ``counts``, ...) change nothing.

Clock. Every time decision uses ``now()``: the store's own clock plus
``clock_offset_s`` (zero outside tests). Tests move time with ``set_clock_offset``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import (
    BudgetExceededError,
    ConflictError,
    ControlPlaneError,
    NotFoundError,
    QuotaExceededError,
    TaskCancelledError,
)
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    Alert,
    BreakerInfo,
    HeartbeatResult,
    ReapReport,
    SpendReport,
    Task,
    TaskCounts,
    TaskPriority,
    TaskStatus,
    WorkspaceLimits,
)
from aragora.store.notify import Watch


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated submission; ``id`` is chosen by the caller."""

    id: str
    workspace_id: str
    task_type: str
    payload: Any
    priority: TaskPriority
    required_capabilities: tuple[str, ...]
    timeout_s: float
    max_retries: int
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    payload_bytes: int = 0
    cost_estimate: float | None = None


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """Claimed tasks (best first), or none and how long until the next delayed task is
    due (if any)."""

    tasks: tuple[Task, ...]
    next_due_in_s: float | None = None

    @property
    def task(self) -> Task | None:
        return self.tasks[0] if self.tasks else None


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[Task]
    next_cursor: str | None


class Store(abc.ABC):
    """Abstract store; see the module docstring for the contract every method keeps."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self._clock_offset_s = 0.0
        self._alert_listeners: list[Callable[[Alert], None]] = []

    # -- alerts --------------------------------------------------------------------
    def add_alert_listener(self, listener: Callable[[Alert], None]) -> None:
        """Call ``listener`` with every alert a transition of this store object raises."""
        self._alert_listeners.append(listener)

    def _emit(self, alert: Alert) -> None:
        for listener in self._alert_listeners:
            listener(alert)

    # -- lifecycle -----------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create schema, start listening for notifications."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and background work. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailableError when the store cannot serve requests."""

    # -- clock ---------------------------------------------------------------------
    @property
    def clock_offset_s(self) -> float:
        return self._clock_offset_s

    def set_clock_offset(self, offset_s: float) -> None:
        """Shift the store clock seen by this store object (tests only)."""
        self._clock_offset_s = offset_s

    @abc.abstractmethod
    async def now(self) -> float:
        """The store clock in epoch seconds, offset included."""

    # -- tasks ---------------------------------------------------------------------
    @abc.abstractmethod
    async def submit(self, task: NewTask) -> tuple[Task, bool]:
        """Create and enqueue; with an idempotency key already used in the workspace,
        return the existing task and False and create nothing."""

    @abc.abstractmethod
    async def claim(self, workspace_id: str, agent_id: str, max_tasks: int = 1) -> ClaimOutcome:
        """Lease the best matching tasks to the agent, at most ``max_tasks`` and never past
        its free capacity, in one atomic step (equal to that many claims in a row).
        AgentNotFoundError if unknown."""

    async def submit_many(
        self, tasks: Sequence[NewTask]
    ) -> list[tuple[Task, bool] | ControlPlaneError]:
        """Submit each task as its own atomic step, in as few round trips as the store
        allows; a refused task (quota, budget) is answered by its error in its place."""
        outcomes: list[tuple[Task, bool] | ControlPlaneError] = []
        for task in tasks:
            try:
                outcomes.append(await self.submit(task))
            except (QuotaExceededError, BudgetExceededError) as exc:
                outcomes.append(exc)
        return outcomes

    async def complete_many(
        self, workspace_id: str, items: Sequence[tuple[str, str, Any, float | None]]
    ) -> list[Task | ControlPlaneError]:
        """Complete each ``(task_id, lease_token, result, cost)`` as its own atomic step;
        a refused completion (lease lost, cancelled, unknown) is answered by its error."""
        outcomes: list[Task | ControlPlaneError] = []
        for task_id, lease_token, result, cost in items:
            try:
                outcomes.append(
                    await self.complete(workspace_id, task_id, lease_token, result, cost)
                )
            except (NotFoundError, ConflictError, TaskCancelledError) as exc:
                outcomes.append(exc)
        return outcomes

    @abc.abstractmethod
    async def complete(
        self, workspace_id: str, task_id: str, lease_token: str, result: Any, cost: float | None
    ) -> Task: ...

    @abc.abstractmethod
    async def fail(
        self, workspace_id: str, task_id: str, lease_token: str, error: str, retryable: bool
    ) -> Task: ...

    @abc.abstractmethod
    async def cancel(self, workspace_id: str, task_id: str) -> Task: ...

    @abc.abstractmethod
    async def retry(self, workspace_id: str, task_id: str) -> Task: ...

    @abc.abstractmethod
    async def get_task(self, workspace_id: str, task_id: str) -> Task:
        """TaskNotFoundError when missing (or in another workspace)."""

    async def get_tasks(self, workspace_id: str, task_ids: Sequence[str]) -> list[Task | None]:
        """The tasks in the order asked, ``None`` for each one missing (or in another
        workspace), in as few round trips as the store allows."""
        found: list[Task | None] = []
        for task_id in task_ids:
            try:
                found.append(await self.get_task(workspace_id, task_id))
            except NotFoundError:
                found.append(None)
        return found

    @abc.abstractmethod
    async def list_tasks(
        self,
        workspace_id: str,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        """Newest first; ``next_cursor`` continues after the last task returned."""

    @abc.abstractmethod
    async def counts(self, workspace_id: str) -> TaskCounts: ...

    @abc.abstractmethod
    async def rewrite_task_data(
        self,
        workspace_id: str,
        task_id: str,
        *,
        payload: tuple[Any, Any] | None = None,
        result: tuple[Any, Any] | None = None,
    ) -> bool:
        """Atomically replace the stored payload and/or result, each given as
        ``(expected, new)``, only if every given field still holds its expected value.
        False when the task is gone or changed; never creates a task (key rotation)."""

    # -- agents --------------------------------------------------------------------
    @abc.abstractmethod
    async def register_agent(
        self,
        workspace_id: str,
        agent_id: str,
        capabilities: tuple[str, ...],
        model: str,
        max_concurrent_tasks: int,
        metadata: dict[str, Any],
    ) -> AgentInfo: ...

    @abc.abstractmethod
    async def heartbeat(
        self, workspace_id: str, agent_id: str, draining: bool | None
    ) -> HeartbeatResult: ...

    @abc.abstractmethod
    async def deregister_agent(self, workspace_id: str, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def get_agent(self, workspace_id: str, agent_id: str) -> AgentInfo: ...

    @abc.abstractmethod
    async def list_agents(
        self,
        workspace_id: str,
        *,
        capability: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[AgentInfo]: ...

    @abc.abstractmethod
    async def get_breaker(self, workspace_id: str, agent_id: str) -> BreakerInfo: ...

    # -- limits and spend ----------------------------------------------------------
    @abc.abstractmethod
    async def set_workspace_limits(self, workspace_id: str, limits: WorkspaceLimits) -> None:
        """Replace the limits the store enforces for the workspace."""

    @abc.abstractmethod
    async def get_workspace_limits(self, workspace_id: str) -> WorkspaceLimits: ...

    @abc.abstractmethod
    async def get_spend(self, workspace_id: str) -> SpendReport:
        """Spend of the current budget period."""

    # -- maintenance ---------------------------------------------------------------
    @abc.abstractmethod
    async def reap(self, workspace_id: str) -> ReapReport: ...

    @abc.abstractmethod
    async def list_workspaces(self) -> Sequence[str]:
        """Workspaces that have ever held an agent or a task."""

    # -- notifications -------------------------------------------------------------
    @abc.abstractmethod
    def watch_ready(self, workspace_id: str) -> AbstractAsyncContextManager[Watch]:
        """Register interest in new claimable work before checking for it."""

    @abc.abstractmethod
    def watch_task(self, workspace_id: str, task_id: str) -> AbstractAsyncContextManager[Watch]:
        """Register interest in a task turning terminal before reading it."""
