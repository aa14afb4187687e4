"""The demo's stream of tasks: a weighted mix of task types and priorities at a set rate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aragora.client import AsyncControlPlaneClient
from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.models import TaskPriority

TEXTS = (
    "Control planes route work to agents that can do it and keep it moving when they fail.",
    "A circuit breaker stops sending work to an agent whose error rate is too high for a while.",
    "Leases make sure that a result is recorded exactly once even when an agent is slow.",
    "Budgets reserve an estimated cost at submit and settle the real cost on completion.",
)
SPECS = (
    "parse an ISO 8601 duration",
    "merge two sorted lists",
    "retry a request with exponential backoff",
    "count words in a file",
)
QUERIES = ("circuit breaker patterns", "priority queues", "lease based locking", "token buckets")


@dataclass(frozen=True)
class TaskKind:
    """A task type the demo submits, the capabilities it requires and how often."""

    task_type: str
    capabilities: tuple[str, ...]
    weight: int
    payload: Callable[[random.Random], dict[str, object]]


TASK_KINDS: tuple[TaskKind, ...] = (
    TaskKind("summarize", ("summarize",), 4, lambda r: {"text": r.choice(TEXTS)}),
    TaskKind("code", ("code",), 2, lambda r: {"spec": r.choice(SPECS)}),
    TaskKind("search", ("search",), 3, lambda r: {"query": r.choice(QUERIES)}),
)
PRIORITY_WEIGHTS: dict[TaskPriority, int] = {
    TaskPriority.CRITICAL: 1,
    TaskPriority.HIGH: 3,
    TaskPriority.NORMAL: 8,
    TaskPriority.LOW: 4,
}


@dataclass
class TrafficStats:
    """What the task stream did so far."""

    submitted: int = 0
    refused: int = 0
    last_error: str = ""


class TaskStream:
    """Submits ``rate_per_s`` tasks per second until stopped, counting what happened.

    A refused submit (quota, rate limit, server away) is counted and the stream goes on.
    ``seed`` makes the sequence of kinds and priorities repeatable.
    """

    def __init__(
        self,
        client: AsyncControlPlaneClient,
        rate_per_s: float,
        seed: int | None = None,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be greater than 0")
        self._client = client
        self._interval_s = 1.0 / rate_per_s
        self._random = random.Random(seed)
        self.stats = TrafficStats()

    def next_task(self) -> tuple[TaskKind, TaskPriority]:
        """The kind and priority of the next task."""
        kind = self._random.choices(TASK_KINDS, weights=[k.weight for k in TASK_KINDS])[0]
        priorities = list(PRIORITY_WEIGHTS)
        priority = self._random.choices(priorities, weights=list(PRIORITY_WEIGHTS.values()))[0]
        return kind, priority

    async def submit_one(self) -> None:
        kind, priority = self.next_task()
        try:
            await self._client.submit_task(
                kind.task_type,
                kind.payload(self._random),
                list(kind.capabilities),
                priority,
                metadata={"source": "aragora demo"},
            )
        except ControlPlaneError as exc:
            self.stats.refused += 1
            self.stats.last_error = str(exc)
            return
        self.stats.submitted += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Submit at the set rate until ``stop`` is set; a slow submit does not pile up."""
        next_at = time.monotonic()
        while not stop.is_set():
            await self.submit_one()
            next_at = max(next_at + self._interval_s, time.monotonic())
            try:
                await asyncio.wait_for(stop.wait(), next_at - time.monotonic())
            except TimeoutError:
                continue
