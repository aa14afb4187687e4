"""The harness's agent: an ``aragora.agent.Agent`` whose handlers sleep a random short
time, fail at a configured rate, and record every execution in an append-only log.

Run as ``python -m chaos.worker``; configured from the environment by the harness:
ARAGORA_URL, ARAGORA_TOKEN, ARAGORA_HEARTBEAT_INTERVAL, CHAOS_AGENT_ID,
CHAOS_CAPABILITIES (comma-separated), CHAOS_CONCURRENCY, CHAOS_LOG (the execution log),
CHAOS_FAILURE_RATE, CHAOS_HANDLER_MIN_S, CHAOS_HANDLER_MAX_S and CHAOS_SEED.

Task types: ``work`` (payload ``{"chaos": n, "fail": bool}``: fails as retryable with
probability CHAOS_FAILURE_RATE, and for good when ``fail`` is set) and ``probe`` (ends at
once; the harness times recoveries with it). Every complete/fail call the SDK makes is
logged as accepted or rejected, through a client that wraps the SDK's (one task at a
time or in batches).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aragora.agent import Agent, PermanentError, TaskContext
from aragora.client import AsyncControlPlaneClient
from aragora.control_plane.errors import (
    ConflictError,
    ControlPlaneError,
    NotFoundError,
    TaskCancelledError,
)
from aragora.control_plane.models import Task
from chaos.execlog import ExecutionLog

_REJECTIONS = (ConflictError, TaskCancelledError, NotFoundError)


class InjectedFailure(RuntimeError):
    """The failure a handler raises on purpose, at the configured rate."""


class RecordingClient(AsyncControlPlaneClient):
    """The SDK's client, logging whether the server accepted each complete and fail."""

    def __init__(self, log: ExecutionLog, agent_id: str, url: str | None, token: str | None):
        super().__init__(url, token)
        self._log = log
        self._agent_id = agent_id
        self._attempts: dict[str, int] = {}  # lease token -> attempt, of every claim here

    async def claim_task(self, agent_id: str, *, wait_s: float = 0.0) -> Task | None:
        task = await super().claim_task(agent_id, wait_s=wait_s)
        if task is not None and task.lease_token is not None:
            self._attempts[task.lease_token] = task.attempt
        return task

    async def claim_tasks(
        self, agent_id: str, *, max_tasks: int, wait_s: float = 0.0
    ) -> list[Task]:
        tasks = await super().claim_tasks(agent_id, max_tasks=max_tasks, wait_s=wait_s)
        for task in tasks:
            if task.lease_token is not None:
                self._attempts[task.lease_token] = task.attempt
        return tasks

    def _record_batch(
        self,
        kind: str,
        leases: Sequence[tuple[str, str]],
        outcomes: Sequence[Task | ControlPlaneError],
    ) -> None:
        """One record per item the server answered for; an item that failed for another
        reason (e.g. the store was away) is retried by the SDK and recorded then."""
        for (task_id, lease_token), outcome in zip(leases, outcomes, strict=False):
            if isinstance(outcome, Task):
                self._record(kind, task_id, lease_token, "accepted", 200)
            elif isinstance(outcome, _REJECTIONS):
                self._record(kind, task_id, lease_token, "rejected", _status(outcome))
            else:
                continue

    async def complete_tasks(
        self, items: Sequence[tuple[str, Any, str, float | None]]
    ) -> list[Task | ControlPlaneError]:
        outcomes = await super().complete_tasks(items)
        self._record_batch("complete", [(i[0], i[2]) for i in items], outcomes)
        return outcomes

    async def fail_tasks(
        self, items: Sequence[tuple[str, str, str, bool]]
    ) -> list[Task | ControlPlaneError]:
        outcomes = await super().fail_tasks(items)
        self._record_batch("fail", [(i[0], i[2]) for i in items], outcomes)
        return outcomes

    def _record(self, kind: str, task_id: str, lease_token: str, outcome: str, status: int) -> None:
        self._log.write(
            {
                "ev": "report",
                "kind": kind,
                "task": task_id,
                "attempt": self._attempts.get(lease_token, 0),
                "agent": self._agent_id,
                "pid": os.getpid(),
                "outcome": outcome,
                "status": status,
                "t": time.time(),
            }
        )

    async def complete_task(
        self, task_id: str, result: Any, *, lease_token: str, cost: float | None = None
    ) -> Task:
        try:
            task = await super().complete_task(task_id, result, lease_token=lease_token, cost=cost)
        except _REJECTIONS as exc:
            self._record("complete", task_id, lease_token, "rejected", _status(exc))
            raise
        self._record("complete", task_id, lease_token, "accepted", 200)
        return task

    async def fail_task(
        self, task_id: str, error: str, *, lease_token: str, retryable: bool = True
    ) -> Task:
        try:
            task = await super().fail_task(
                task_id, error, lease_token=lease_token, retryable=retryable
            )
        except _REJECTIONS as exc:
            self._record("fail", task_id, lease_token, "rejected", _status(exc))
            raise
        self._record("fail", task_id, lease_token, "accepted", 200)
        return task


def _status(exc: Exception) -> int:
    return 404 if isinstance(exc, NotFoundError) else 409


class ChaosHandlers:
    """The handlers, sharing the log, the random source and the failure rate."""

    def __init__(
        self,
        log: ExecutionLog,
        rng: random.Random,
        failure_rate: float,
        handler_min_s: float,
        handler_max_s: float,
    ) -> None:
        self.log = log
        self.rng = rng
        self.failure_rate = failure_rate
        self.handler_min_s = handler_min_s
        self.handler_max_s = handler_max_s

    def _event(self, ev: str, ctx: TaskContext, chaos: Any, **extra: Any) -> None:
        self.log.write(
            {
                "ev": ev,
                "task": ctx.task_id,
                "attempt": ctx.attempt,
                "agent": ctx.agent_id,
                "pid": os.getpid(),
                "chaos": chaos,
                "t": time.time(),
                **extra,
            }
        )

    async def work(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        chaos = payload.get("chaos") if isinstance(payload, dict) else None
        started = time.time()
        self._event("start", ctx, chaos)
        outcome = "cancelled"
        try:
            await asyncio.sleep(self.rng.uniform(self.handler_min_s, self.handler_max_s))
            if isinstance(payload, dict) and payload.get("fail"):
                outcome = "designed_failure"
                raise PermanentError("this task is designed to fail")
            if self.rng.random() < self.failure_rate:
                outcome = "injected_failure"
                raise InjectedFailure(f"injected failure on attempt {ctx.attempt}")
            outcome = "ok"
        finally:
            self._event("end", ctx, chaos, outcome=outcome, started=started)
        return {"chaos": chaos, "agent": ctx.agent_id, "attempt": ctx.attempt, "pid": os.getpid()}

    async def probe(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        self._event("start", ctx, None)
        self._event("end", ctx, None, outcome="ok")
        return {"probe": True, "agent": ctx.agent_id, "attempt": ctx.attempt}


async def main() -> None:
    """Run the agent until SIGTERM/SIGINT (SIGKILL, of course, also ends it)."""
    agent_id = os.environ["CHAOS_AGENT_ID"]
    log = ExecutionLog(Path(os.environ["CHAOS_LOG"]))
    seed = f"{os.environ.get('CHAOS_SEED', '0')}:{agent_id}:{os.getpid()}"
    handlers = ChaosHandlers(
        log,
        random.Random(seed),
        float(os.environ.get("CHAOS_FAILURE_RATE", "0")),
        float(os.environ.get("CHAOS_HANDLER_MIN_S", "0.02")),
        float(os.environ.get("CHAOS_HANDLER_MAX_S", "0.3")),
    )
    capabilities = [c for c in os.environ.get("CHAOS_CAPABILITIES", "").split(",") if c]
    async with RecordingClient(
        log, agent_id, os.environ.get("ARAGORA_URL"), os.environ.get("ARAGORA_TOKEN")
    ) as client:
        agent = Agent(
            agent_id,
            capabilities=capabilities,
            model="chaos",
            concurrency=int(os.environ.get("CHAOS_CONCURRENCY", "1")),
            claim_wait_s=5.0,
            drain_grace_s=5.0,
            backoff_max_s=2.0,
            client=client,
        )
        agent.add_handler("work", handlers.work)
        agent.add_handler("probe", handlers.probe)
        await agent.run_async(handle_signals=True)
    log.close()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main())
