"""What a task handler gets besides the payload: ``TaskContext``; and ``PermanentError``."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

from aragora.control_plane.models import Task, TaskPriority


class PermanentError(Exception):
    """Raise from a handler to fail the task at once, without retries.

    Any other exception fails the attempt as retryable: the control plane runs the task
    again (after a backoff) until its retries are spent. Use this one when running it
    again cannot help, e.g. the payload is malformed.
    """


class TaskContext:
    """The task a handler runs and a few services for it.

    ``correlation_id`` follows the work across services: the submitter's
    ``metadata["correlation_id"]`` when given, else the task id. ``report_cost`` adds to
    the cost recorded with the result (e.g. money spent on model calls), which the
    control plane settles against budgets. ``cancelled`` turns True when the task is
    cancelled or the agent gives up on it; async handlers are also cancelled outright,
    while sync handlers (run in a thread) should check it between steps.
    """

    def __init__(self, task: Task, agent_id: str) -> None:
        self.task = task
        self.agent_id = agent_id
        self._cost: float | None = None
        self._cost_lock = threading.Lock()
        self._cancelled = threading.Event()
        correlation = task.metadata.get("correlation_id") if task.metadata else None
        self.correlation_id: str = str(correlation) if correlation else task.id
        self.logger = logging.LoggerAdapter(
            logging.getLogger("aragora.agent.task"),
            {"task_id": task.id, "correlation_id": self.correlation_id, "agent_id": agent_id},
        )

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def task_type(self) -> str:
        return self.task.task_type

    @property
    def attempt(self) -> int:
        """1 on the first attempt, 2 on the first retry, and so on."""
        return self.task.attempt

    @property
    def priority(self) -> TaskPriority:
        return self.task.priority

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.task.metadata

    @property
    def timeout_s(self) -> float:
        """How long this attempt may run before the control plane gives it to someone else."""
        return self.task.timeout_s

    @property
    def cost(self) -> float | None:
        """The total reported with ``report_cost``, or None when nothing was reported."""
        return self._cost

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or the agent stopped waiting for it."""
        return self._cancelled.is_set()

    def report_cost(self, amount: float) -> None:
        """Add ``amount`` (a finite number, 0 or more) to the cost recorded with the result."""
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError("cost must be a number")
        if not math.isfinite(amount) or amount < 0:
            raise ValueError("cost must be a finite number of 0 or more")
        with self._cost_lock:
            self._cost = (self._cost or 0.0) + float(amount)

    def _mark_cancelled(self) -> None:
        self._cancelled.set()
