"""TaskScheduler: submit, claim, complete, fail, cancel, retry and wait for tasks.

Listeners (``on_submitted``, ``on_finished``) let metrics and alerts follow the tasks
that pass through this scheduler without touching the store: each is called with the
task after the store operation succeeded; a listener that raises is logged and never
fails the transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import (
    ConflictError,
    ControlPlaneError,
    NotFoundError,
    PayloadTooLargeError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
)
from aragora.control_plane.models import (
    Task,
    TaskPriority,
    TaskSpec,
    TaskStatus,
    normalize_capabilities,
    validate_name,
    validate_workspace_id,
)
from aragora.store.base import NewTask, Store, TaskPage
from aragora.store.notify import Watch

if TYPE_CHECKING:
    from aragora.crypto import PayloadCipher

logger = logging.getLogger(__name__)

TaskListener = Callable[[Task], None]
"""Called with a task after a transition; must return quickly and never block."""

MAX_IDEMPOTENCY_KEY_LENGTH = 256
MAX_ERROR_LENGTH = 8192
MAX_LIST_LIMIT = 1000
MAX_BATCH = 1000


class TaskScheduler:
    """Validates task operations and runs each as one store transition.

    Waiting (``claim`` with ``wait_s``, ``wait_for_result``) registers with the store's
    notifications before it reads, so a change between the read and the wait wakes it.

    ``on_submitted`` listeners get every task that ``submit`` / ``submit_many`` created
    (not the existing task an idempotency key returned); ``on_finished`` listeners get
    every task returned by ``complete``, ``complete_many``, ``fail`` and ``cancel``
    (terminal, or pending again after a failed attempt that will be retried).
    """

    def __init__(
        self, store: Store, config: ControlPlaneConfig, cipher: PayloadCipher | None = None
    ) -> None:
        self._store = store
        self._config = config
        self._cipher = cipher
        self.on_submitted: list[TaskListener] = []
        self.on_finished: list[TaskListener] = []

    @staticmethod
    def _notify(listeners: list[TaskListener], task: Task) -> None:
        for listener in tuple(listeners):
            try:
                listener(task)
            except Exception:
                logger.exception("task listener %r failed for task %s", listener, task.id)

    def _finished(self, task: Task) -> Task:
        """The task in clear, after telling the ``on_finished`` listeners."""
        opened = self._open(task)
        self._notify(self.on_finished, opened)
        return opened

    # -- encryption at rest ------------------------------------------------------------
    def _seal(self, value: Any, workspace_id: str, task_id: str, field: str) -> Any:
        if self._cipher is None:
            return value
        return self._cipher.encrypt(value, workspace_id=workspace_id, task_id=task_id, field=field)

    def _open(self, task: Task) -> Task:
        """The task with payload and result in clear (values stored before encryption was
        turned on pass through)."""
        if self._cipher is None:
            return task
        payload = self._cipher.decrypt_if_encrypted(
            task.payload, workspace_id=task.workspace_id, task_id=task.id, field="payload"
        )
        result = self._cipher.decrypt_if_encrypted(
            task.result, workspace_id=task.workspace_id, task_id=task.id, field="result"
        )
        return dataclasses.replace(task, payload=payload, result=result)

    async def submit(
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
    ) -> Task:
        validate_workspace_id(workspace_id)
        spec = TaskSpec(
            task_type,
            payload,
            required_capabilities,
            priority,
            idempotency_key,
            timeout_s,
            max_retries,
            metadata,
            cost_estimate,
        )
        new = self._new_task(spec, workspace_id)
        task, created = await self._store.submit(new)
        if not created:
            return self._open(task)
        task = dataclasses.replace(task, payload=payload)
        self._notify(self.on_submitted, task)
        return task

    async def submit_many(
        self, specs: Sequence[TaskSpec], *, workspace_id: str = "default"
    ) -> list[Task | ControlPlaneError]:
        """Submit a batch in as few store round trips as the store allows. Every task is
        validated first (a ValidationError names ``tasks[i].<field>`` and nothing is
        written); a task the store refuses (quota, budget) is answered by its error in
        its place, the others are submitted."""
        validate_workspace_id(workspace_id)
        if not 0 < len(specs) <= MAX_BATCH:
            raise ValidationError("tasks", f"must hold 1 to {MAX_BATCH} tasks")
        news = []
        for index, spec in enumerate(specs):
            try:
                news.append(self._new_task(spec, workspace_id))
            except ValidationError as exc:
                raise ValidationError(f"tasks[{index}].{exc.field}", exc.reason) from None
        outcomes = await self._store.submit_many(news)
        opened: list[Task | ControlPlaneError] = []
        for spec, outcome in zip(specs, outcomes, strict=True):
            if isinstance(outcome, ControlPlaneError):
                opened.append(outcome)
            else:
                task, created = outcome
                if created:
                    task = dataclasses.replace(task, payload=spec.payload)
                    self._notify(self.on_submitted, task)
                    opened.append(task)
                else:
                    opened.append(self._open(task))
        return opened

    def _new_task(self, spec: TaskSpec, workspace_id: str) -> NewTask:
        """Validate one submission and seal its payload (nothing is written)."""
        validate_name(spec.task_type, "task_type")
        caps = normalize_capabilities(spec.required_capabilities, "required_capabilities")
        prio = TaskPriority.parse(spec.priority)
        payload_bytes = self.check_size("payload", spec.payload)
        _refuse_envelope("payload", spec.payload)
        cost_estimate, idempotency_key = spec.cost_estimate, spec.idempotency_key
        if cost_estimate is not None and not _is_cost(cost_estimate):
            raise ValidationError("cost_estimate", "must be a finite number of 0 or more")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str)
            or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        ):
            raise ValidationError(
                "idempotency_key",
                f"must be a string of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            )
        timeout = self._config.task_timeout if spec.timeout_s is None else spec.timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (0 < timeout <= 7 * 86_400 and math.isfinite(timeout))
        ):
            raise ValidationError(
                "timeout_s", "must be a number of seconds above 0 and at most 7 days"
            )
        retries = self._config.max_task_retries if spec.max_retries is None else spec.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            raise ValidationError("max_retries", "must be an integer from 0 to 100")
        metadata = spec.metadata
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError("metadata", "must be an object")
        self.check_size("metadata", metadata or {})
        task_id = uuid.uuid4().hex
        return NewTask(
            id=task_id,
            workspace_id=workspace_id,
            task_type=spec.task_type,
            payload=self._seal(spec.payload, workspace_id, task_id, "payload"),
            priority=prio,
            required_capabilities=caps,
            timeout_s=float(timeout),
            max_retries=retries,
            idempotency_key=idempotency_key,
            metadata=dict(metadata or {}),
            payload_bytes=payload_bytes,
            cost_estimate=None if cost_estimate is None else float(cost_estimate),
        )

    def check_size(self, field: str, value: Any) -> int:
        """Encoded size in bytes if JSON-encodable and within ``max_payload_bytes``,
        else a ValidationError."""
        try:
            encoded = json.dumps(
                value, separators=(",", ":"), allow_nan=False, ensure_ascii=False
            ).encode()
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError: lone surrogates
            raise ValidationError(field, f"must be JSON-encodable: {exc}") from None
        except RecursionError:
            raise ValidationError(field, "is nested too deeply") from None
        size = len(encoded)
        if size > self._config.max_payload_bytes:
            raise PayloadTooLargeError(field, size, self._config.max_payload_bytes)
        return size

    async def claim(
        self, agent_id: str, *, wait_s: float = 0.0, workspace_id: str = "default"
    ) -> Task | None:
        """Lease the best task the agent may run, waiting up to ``wait_s`` for one."""
        tasks = await self.claim_many(
            agent_id, max_tasks=1, wait_s=wait_s, workspace_id=workspace_id
        )
        return tasks[0] if tasks else None

    async def claim_many(
        self,
        agent_id: str,
        *,
        max_tasks: int,
        wait_s: float = 0.0,
        workspace_id: str = "default",
    ) -> list[Task]:
        """Lease up to ``max_tasks`` of the best tasks the agent may run (never past its
        free capacity) in one store operation, waiting up to ``wait_s`` for at least one."""
        async with self.claimer(agent_id, workspace_id=workspace_id) as claimer:
            return await claimer.claim(max_tasks, wait_s=wait_s)

    @contextlib.asynccontextmanager
    async def claimer(
        self, agent_id: str, *, workspace_id: str = "default"
    ) -> AsyncIterator[Claimer]:
        """A claimer for a loop that claims again and again for one agent.

        It listens for new work for as long as it is open, so after a claim that got
        fewer tasks than asked it waits for news (up to the next call's ``wait_s``)
        before asking the store again, instead of asking at once for nothing."""
        validate_workspace_id(workspace_id)
        validate_name(agent_id, "agent_id")
        async with self._store.watch_ready(workspace_id) as watch:
            yield Claimer(self, watch, agent_id, workspace_id)

    async def complete(
        self,
        task_id: str,
        result: Any,
        *,
        lease_token: str,
        cost: float | None = None,
        workspace_id: str = "default",
    ) -> Task:
        validate_workspace_id(workspace_id)
        self._check_ids(task_id, lease_token)
        self.check_size("result", result)
        _refuse_envelope("result", result)
        if cost is not None and (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost < 0
        ):
            raise ValidationError("cost", "must be a finite number of 0 or more")
        sealed = self._seal(result, workspace_id, task_id, "result")
        task = await self._store.complete(
            workspace_id, task_id, lease_token, sealed, None if cost is None else float(cost)
        )
        return self._finished(task)

    async def complete_many(
        self,
        completions: Sequence[tuple[str, Any, str]],
        *,
        workspace_id: str = "default",
        costs: Sequence[float | None] | None = None,
    ) -> list[Task | ControlPlaneError]:
        """Complete ``(task_id, result, lease_token)`` items in as few store round trips as
        the store allows; each is its own atomic step, and a refused one (lease lost,
        cancelled, unknown) is answered by its error in its place. ``costs``, when given,
        holds each item's reported cost (``None``: the estimate). Every item is
        validated before anything is written."""
        validate_workspace_id(workspace_id)
        if not 0 < len(completions) <= MAX_BATCH:
            raise ValidationError("completions", f"must hold 1 to {MAX_BATCH} items")
        if costs is not None and len(costs) != len(completions):
            raise ValidationError("costs", "must hold one cost (or None) per completion")
        items: list[tuple[str, str, Any, float | None]] = []
        for index, (task_id, result, lease_token) in enumerate(completions):
            cost = None if costs is None else costs[index]
            try:
                self._check_ids(task_id, lease_token)
                self.check_size("result", result)
                _refuse_envelope("result", result)
                if cost is not None and not _is_cost(cost):
                    raise ValidationError("cost", "must be a finite number of 0 or more")
            except ValidationError as exc:
                raise ValidationError(f"completions[{index}].{exc.field}", exc.reason) from None
            sealed = self._seal(result, workspace_id, task_id, "result")
            items.append((task_id, lease_token, sealed, None if cost is None else float(cost)))
        outcomes = await self._store.complete_many(workspace_id, items)
        return [o if isinstance(o, ControlPlaneError) else self._finished(o) for o in outcomes]

    async def fail(
        self,
        task_id: str,
        error: str,
        *,
        lease_token: str,
        retryable: bool = True,
        workspace_id: str = "default",
    ) -> Task:
        validate_workspace_id(workspace_id)
        self._check_ids(task_id, lease_token)
        if not isinstance(error, str):
            raise ValidationError("error", "must be a string")
        task = await self._store.fail(
            workspace_id, task_id, lease_token, error[:MAX_ERROR_LENGTH], bool(retryable)
        )
        return self._finished(task)

    async def fail_many(
        self, failures: Sequence[tuple[str, str, str, bool]], *, workspace_id: str = "default"
    ) -> list[Task | ControlPlaneError]:
        """Fail ``(task_id, error, lease_token, retryable)`` items, each its own atomic
        step; a refused one (lease lost, cancelled, unknown) is answered by its error in
        its place. Every item is validated before anything is written."""
        validate_workspace_id(workspace_id)
        if not 0 < len(failures) <= MAX_BATCH:
            raise ValidationError("failures", f"must hold 1 to {MAX_BATCH} items")
        for index, (task_id, error, lease_token, _) in enumerate(failures):
            try:
                self._check_ids(task_id, lease_token)
                if not isinstance(error, str):
                    raise ValidationError("error", "must be a string")
            except ValidationError as exc:
                raise ValidationError(f"failures[{index}].{exc.field}", exc.reason) from None
        outcomes: list[Task | ControlPlaneError] = []
        for task_id, error, lease_token, retryable in failures:
            try:
                task = await self._store.fail(
                    workspace_id, task_id, lease_token, error[:MAX_ERROR_LENGTH], bool(retryable)
                )
            except (NotFoundError, ConflictError, TaskCancelledError) as exc:
                outcomes.append(exc)
            else:
                outcomes.append(self._finished(task))
        return outcomes

    async def cancel(self, task_id: str, *, workspace_id: str = "default") -> Task:
        validate_workspace_id(workspace_id)
        self._check_task_id(task_id)
        task = await self._store.cancel(workspace_id, task_id)
        return self._finished(task)

    async def retry(self, task_id: str, *, workspace_id: str = "default") -> Task:
        validate_workspace_id(workspace_id)
        self._check_task_id(task_id)
        return self._open(await self._store.retry(workspace_id, task_id))

    async def get(self, task_id: str, *, workspace_id: str = "default") -> Task:
        validate_workspace_id(workspace_id)
        self._check_task_id(task_id)
        return self._open(await self._store.get_task(workspace_id, task_id))

    async def get_many(
        self, task_ids: Sequence[str], *, workspace_id: str = "default"
    ) -> list[Task | None]:
        """The tasks in the order asked (``None`` for an unknown id), in as few store
        round trips as the store allows: e.g. to collect the results of a batch."""
        validate_workspace_id(workspace_id)
        if not 0 < len(task_ids) <= MAX_BATCH:
            raise ValidationError("task_ids", f"must hold 1 to {MAX_BATCH} ids")
        for task_id in task_ids:
            self._check_task_id(task_id)
        tasks = await self._store.get_tasks(workspace_id, task_ids)
        return [None if t is None else self._open(t) for t in tasks]

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        workspace_id: str = "default",
    ) -> TaskPage:
        validate_workspace_id(workspace_id)
        if task_type is not None:
            validate_name(task_type, "task_type")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}")
        page = await self._store.list_tasks(
            workspace_id, status=status, task_type=task_type, limit=limit, cursor=cursor
        )
        return TaskPage([self._open(t) for t in page.tasks], page.next_cursor)

    async def wait(self, task_id: str, timeout_s: float, *, workspace_id: str = "default") -> Task:
        """Wait until the task is terminal and return it; TimeoutError when the wait ends."""
        validate_workspace_id(workspace_id)
        self._check_task_id(task_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self._store.watch_task(workspace_id, task_id) as watch:
            task = await self._store.get_task(workspace_id, task_id)
            while not task.is_terminal:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"task {task_id!r} not finished within {timeout_s}s")
                if await watch.wait(remaining):
                    delivered = watch.take_value()
                    if isinstance(delivered, Task) and delivered.is_terminal:
                        return self._open(delivered)
                task = await self._store.get_task(workspace_id, task_id)
            return self._open(task)

    async def wait_for_result(
        self, task_id: str, timeout: float, *, workspace_id: str = "default"
    ) -> Any:
        """The task's result; TaskFailedError, TaskCancelledError or TimeoutError otherwise."""
        task = await self.wait(task_id, timeout, workspace_id=workspace_id)
        if task.status is TaskStatus.COMPLETED:
            return task.result
        if task.status is TaskStatus.CANCELLED:
            raise TaskCancelledError(task_id)
        raise TaskFailedError(task_id, task.errors)

    def _check_ids(self, task_id: str, lease_token: str) -> None:
        self._check_task_id(task_id)
        if not isinstance(lease_token, str) or not 0 < len(lease_token) <= 128:
            raise ValidationError("lease_token", "must be a non-empty string")

    @staticmethod
    def _check_task_id(task_id: str) -> None:
        if not isinstance(task_id, str) or not 0 < len(task_id) <= 128:
            raise ValidationError("task_id", "must be a non-empty string of at most 128 characters")


class Claimer:
    """Claims for one agent over one open watch (see ``TaskScheduler.claimer``)."""

    def __init__(
        self, scheduler: TaskScheduler, watch: Watch, agent_id: str, workspace_id: str
    ) -> None:
        self._scheduler = scheduler
        self._watch = watch
        self.agent_id = agent_id
        self.workspace_id = workspace_id
        self._drained = False
        self._due_at: float | None = None

    async def claim(self, max_tasks: int, *, wait_s: float = 0.0) -> list[Task]:
        """Lease up to ``max_tasks`` tasks in one store operation (never past the agent's
        free capacity), waiting up to ``wait_s`` for at least one."""
        if not isinstance(wait_s, int | float) or not 0 <= wait_s <= 3600 or math.isnan(wait_s):
            raise ValidationError("wait_s", "must be between 0 and 3600 seconds")
        if not _is_count(max_tasks, MAX_BATCH):
            raise ValidationError("max_tasks", f"must be an integer from 1 to {MAX_BATCH}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        store = self._scheduler._store
        while True:
            if self._drained:
                # The last claim came back short: little can have become claimable
                # unless a notification says so, so wait for one (or for a delayed task
                # to fall due), then look once. Time-driven changes that announce
                # nothing (a breaker re-admitting the agent) are still seen, at the
                # latest when the wait ends.
                until = deadline if self._due_at is None else min(deadline, self._due_at)
                await self._watch.wait(until - loop.time())
            outcome = await store.claim(self.workspace_id, self.agent_id, max_tasks)
            self._drained = len(outcome.tasks) < max_tasks
            due_in_s = outcome.next_due_in_s
            self._due_at = None if due_in_s is None else loop.time() + max(due_in_s, 0.001)
            if outcome.tasks:
                return [self._scheduler._open(task) for task in outcome.tasks]
            if loop.time() >= deadline:
                return []


def _is_cost(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _refuse_envelope(field: str, value: Any) -> None:
    """A value shaped like an encryption envelope would be mistaken for one when read."""
    from aragora.crypto import is_encrypted

    if is_encrypted(value):
        raise ValidationError(field, "must not have the shape of an encryption envelope")


def _is_count(value: object, upper: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= upper
