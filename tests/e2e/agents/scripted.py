"""An agent for end-to-end tests, run as ``aragora agent run tests/e2e/agents/scripted.py``.

Its id, capabilities and concurrency come from SCRIPTED_AGENT_ID,
SCRIPTED_CAPABILITIES (comma-separated) and SCRIPTED_CONCURRENCY. It tells the test
what it does by printing one line per event on stdout (logs go to stderr):

* ``RAN <task_id> <label>`` when a handler starts, ``label`` being ``payload["label"]``;
* ``STARTED <task_id>`` when a ``block`` or ``slow`` task is underway.

Task types: ``echo`` returns its payload; ``fail`` raises on every attempt; ``block``
never finishes when SCRIPTED_BLOCK=1 and completes at once otherwise; ``slow`` takes
``payload["seconds"]``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aragora.agent import Agent, TaskContext

agent = Agent(
    os.environ.get("SCRIPTED_AGENT_ID", "scripted"),
    capabilities=[c for c in os.environ.get("SCRIPTED_CAPABILITIES", "e2e").split(",") if c],
    model="scripted",
    concurrency=int(os.environ.get("SCRIPTED_CONCURRENCY", "1")),
    drain_grace_s=20.0,
)


def _say(*words: object) -> None:
    print(*words, flush=True)


def _ran(payload: Any, ctx: TaskContext) -> None:
    label = payload.get("label", "-") if isinstance(payload, dict) else "-"
    _say("RAN", ctx.task_id, label)


@agent.task("echo")
async def echo(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    _ran(payload, ctx)
    ctx.report_cost(0.25)
    return {"echo": payload, "agent": ctx.agent_id, "attempt": ctx.attempt}


@agent.task("fail")
async def fail(payload: Any, ctx: TaskContext) -> None:
    _ran(payload, ctx)
    raise RuntimeError(f"boom on attempt {ctx.attempt}")


@agent.task("block")
async def block(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    _ran(payload, ctx)
    _say("STARTED", ctx.task_id)
    if os.environ.get("SCRIPTED_BLOCK") == "1":
        await asyncio.Event().wait()
    return {"done_by": ctx.agent_id}


@agent.task("slow")
async def slow(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    _ran(payload, ctx)
    _say("STARTED", ctx.task_id)
    await asyncio.sleep(float(payload["seconds"]))
    return {"done_by": ctx.agent_id, "slept_s": payload["seconds"]}
