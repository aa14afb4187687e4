"""Three ``aragora serve`` processes on one Redis: any instance serves any request.

A task is submitted through server A, claimed and completed through server B by an
agent, and waited for through server C, whose long-poll must wake on the completion
made elsewhere (a pub/sub notification), not on a polling interval.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aragora.control_plane import TaskStatus
from aragora.control_plane.models import Task
from tests.e2e.conftest import Processes, ServerProc, unique

WAIT_S = 30.0
PROMPT_WAKE_S = 1.0
"""How soon after the completion the waiter on another instance must have its answer."""


def _three_servers(procs: Processes) -> tuple[ServerProc, ServerProc, ServerProc]:
    prefix = procs.redis_prefix()
    env = {"ARAGORA_KEY_PREFIX": prefix}
    a, b, c = (procs.server(store=procs.redis_url, env=env, wait=False) for _ in range(3))
    for server in (a, b, c):
        server.wait_ready()
    return a, b, c


@pytest.mark.timeout(120)
def test_submit_on_one_claim_through_another_wait_on_the_third(procs: Processes) -> None:
    a, b, c = _three_servers(procs)
    cap = unique("three")
    submitter = a.role_token("submitter")
    agent_token = b.role_token("agent")
    agent_id = unique("agent")

    with (
        a.client(submitter) as on_a,
        b.client(agent_token) as on_b,
        c.client(submitter) as on_c,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        on_b.register_agent(agent_id, [cap], "m")
        task_id = on_a.submit_task("echo", {"label": "three"}, [cap], priority="high")
        assert on_c.get_task(task_id).status is TaskStatus.PENDING

        def wait_on_c() -> tuple[Task, float]:
            task = on_c.wait_for_task(task_id, WAIT_S)
            return task, time.monotonic()

        waiting = pool.submit(wait_on_c)
        claimed = on_b.claim_task(agent_id, wait_s=10.0)
        assert claimed is not None and claimed.id == task_id
        assert claimed.lease_token is not None
        assert not waiting.done(), "the wait on C returned before the task completed"

        on_b.complete_task(
            task_id, {"echo": "three", "by": agent_id}, lease_token=claimed.lease_token
        )
        completed_at = time.monotonic()
        task, woke_at = waiting.result(timeout=WAIT_S)

    assert task.id == task_id
    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"echo": "three", "by": agent_id}
    assert task.priority.value == "high"
    # Woken by the completion through B, not by a timeout or a polling interval.
    assert woke_at - completed_at < PROMPT_WAKE_S, woke_at - completed_at
