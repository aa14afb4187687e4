"""The load: ``scenario.tasks`` tasks with mixed priorities, capabilities and
idempotency keys, submitted at an even rate over the load period.

Every task carries an idempotency key, so a submit whose answer was lost (server killed,
connection reset, 503) is sent again, to the next server, until it is acknowledged: the
repeat returns the same task. A share of tasks is also submitted a second time on
purpose, and both answers must name the same task.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from aragora.client import AsyncControlPlaneClient, ServerError, ServerUnreachableError
from aragora.control_plane.errors import ControlPlaneError, StoreUnavailableError
from aragora.control_plane.models import TaskPriority
from chaos.scenario import Scenario

TRANSIENT = (ServerUnreachableError, StoreUnavailableError, ServerError)
CAPABILITY_CHOICES: tuple[tuple[str, ...], ...] = (
    (),
    ("alpha",),
    ("beta",),
    ("gamma",),
    ("alpha", "beta"),
)
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """One task the submitter will send."""

    number: int
    priority: TaskPriority
    capabilities: tuple[str, ...]
    designed_to_fail: bool
    submit_twice: bool

    @property
    def idempotency_key(self) -> str:
        return f"chaos-{self.number}"


def plan_tasks(scenario: Scenario) -> list[TaskPlan]:
    """The tasks of a run, the same for the same seed."""
    rng = random.Random(f"tasks:{scenario.seed}")
    priorities = list(TaskPriority)
    return [
        TaskPlan(
            number=n,
            priority=rng.choice(priorities),
            capabilities=rng.choice(CAPABILITY_CHOICES),
            designed_to_fail=rng.random() < scenario.designed_failure_share,
            submit_twice=rng.random() < scenario.duplicate_submit_share,
        )
        for n in range(scenario.tasks)
    ]


@dataclass
class SubmitStats:
    """What the submitter saw."""

    acknowledged: dict[int, str] = field(default_factory=dict)
    duplicates_sent: int = 0
    duplicates_same_task: int = 0
    idempotency_violations: list[dict[str, object]] = field(default_factory=list)
    transient_errors: Counter[str] = field(default_factory=Counter)
    rejected: list[dict[str, object]] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)


class Submitter:
    """Sends the planned tasks through every server in turn, retrying transient errors."""

    def __init__(self, scenario: Scenario, urls: list[str], token: str) -> None:
        self.scenario = scenario
        self.plans = plan_tasks(scenario)
        self.clients = [
            AsyncControlPlaneClient(url, token, timeout_s=REQUEST_TIMEOUT_S) for url in urls
        ]
        self.stats = SubmitStats()

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))

    async def run(self, load_s: float, give_up_at: float) -> SubmitStats:
        """Submit every planned task, evenly over ``load_s``; stop retrying any one at
        ``give_up_at`` (monotonic)."""
        gate = asyncio.Semaphore(self.scenario.submit_concurrency)
        interval_s = load_s / max(1, len(self.plans))
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        for plan in self.plans:
            delay_s = start + plan.number * interval_s - time.monotonic()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await gate.acquire()
            job = asyncio.create_task(self._submit_plan(plan, gate, give_up_at))
            pending.add(job)
            job.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return self.stats

    async def _submit_plan(
        self, plan: TaskPlan, gate: asyncio.Semaphore, give_up_at: float
    ) -> None:
        try:
            task_id = await self._submit(plan, plan.number, give_up_at)
            if task_id is None:
                return
            self.stats.acknowledged[plan.number] = task_id
            if plan.submit_twice:
                again = await self._submit(plan, plan.number + 1, give_up_at)
                if again is not None:
                    self.stats.duplicates_sent += 1
                    if again == task_id:
                        self.stats.duplicates_same_task += 1
                    else:
                        self.stats.idempotency_violations.append(
                            {"key": plan.idempotency_key, "first": task_id, "second": again}
                        )
        finally:
            gate.release()

    async def _submit(self, plan: TaskPlan, first_server: int, give_up_at: float) -> str | None:
        attempt = 0
        while True:
            client = self.clients[(first_server + attempt) % len(self.clients)]
            try:
                return await client.submit_task(
                    "work",
                    {"chaos": plan.number, "fail": plan.designed_to_fail},
                    plan.capabilities,
                    plan.priority,
                    idempotency_key=plan.idempotency_key,
                )
            except TRANSIENT as exc:
                self.stats.transient_errors[type(exc).__name__] += 1
            except ControlPlaneError as exc:
                self.stats.rejected.append({"task": plan.number, "error": str(exc)})
                return None
            attempt += 1
            if time.monotonic() >= give_up_at:
                self.stats.abandoned.append(plan.number)
                return None
            await asyncio.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)))
