"""A worker process killed with SIGKILL loses no task and gets nothing finished twice.

The worker (``helpers/worker.py``) runs in a process of its own on the same store. It is
killed without warning; time then moves on the store clock of this process, the reaper
notices the silent agent, and another agent finishes the work.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from aragora.control_plane import (
    AgentStatus,
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    LeaseLostError,
    Task,
    TaskStatus,
)
from tests.conftest import Clock
from tests.control_plane.helpers.process import WorkerProcess


async def _finish_everything(cp: ControlPlaneCoordinator, agent: str) -> dict[str, Task]:
    """Let ``agent`` claim and complete until nothing is left; the tasks it completed."""
    await cp.register_agent(agent, [], model="m", max_concurrent_tasks=5)
    finished: dict[str, Task] = {}
    while (task := await cp.claim_task(agent)) is not None:
        assert task.lease_token is not None
        finished[task.id] = await cp.complete_task(
            task.id, {"agent": agent}, lease_token=task.lease_token
        )
    return finished


async def test_tasks_of_a_killed_worker_are_requeued_and_finished_once_by_another_agent(
    cp: ControlPlaneCoordinator, clock: Clock, config: ControlPlaneConfig, tmp_path: Path
) -> None:
    ids = {await cp.submit_task("work", {"n": n}) for n in range(5)}
    async with await WorkerProcess.start(
        config, tmp_path / "worker.err", agent="doomed", max_tasks=5, count=5, hold=True
    ) as worker:
        await worker.expect("holding")
        leases = {w[1]: w[2] for w in (line.split() for line in worker.lines) if w[0] == "claimed"}
        assert set(leases) == ids
        assert set((await cp.get_agent("doomed")).running_task_ids) == ids
        assert await worker.kill() == -signal.SIGKILL

    # Nothing happens before the heartbeat timeout: a slow agent is not a dead one.
    assert (await cp.reap()).tasks_requeued == 0
    assert (await cp.store.counts("default")).running == 5

    clock.advance(config.heartbeat_timeout + 1)
    report = await cp.reap()
    assert (report.agents_offline, report.tasks_requeued, report.tasks_failed) == (1, 5, 0)
    assert (await cp.get_agent("doomed")).status is AgentStatus.OFFLINE
    for task_id in ids:
        task = await cp.get_task(task_id)
        assert task.status is TaskStatus.PENDING and task.lease_token is None
        assert [(e.attempt, e.error, e.agent_id) for e in task.errors] == [
            (1, "agent offline", "doomed")
        ]

    clock.advance(config.retry_backoff_max_s + 1)  # past any retry backoff
    finished = await _finish_everything(cp, "survivor")
    assert set(finished) == ids

    for task_id, lease in leases.items():
        with pytest.raises(LeaseLostError):
            await cp.complete_task(task_id, {"agent": "doomed"}, lease_token=lease)
        with pytest.raises(LeaseLostError):
            await cp.fail_task(task_id, "late failure", lease_token=lease)
        task = await cp.get_task(task_id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == {"agent": "survivor"}
        assert task.attempt == 2
        assert [e.error for e in task.errors] == ["agent offline"]
        assert await cp.wait_for_result(task_id, timeout=0) == {"agent": "survivor"}
    counts = await cp.store.counts("default")
    assert (counts.completed, counts.total) == (5, 5)


@pytest.mark.parametrize(
    ("event", "times"),
    [("claimed", 1), ("completed", 1), ("completed", 25)],
    ids=["after-first-claim", "after-first-completion", "mid-stream"],
)
async def test_worker_killed_at_an_arbitrary_moment_loses_no_task_and_finishes_none_twice(
    cp: ControlPlaneCoordinator,
    clock: Clock,
    config: ControlPlaneConfig,
    tmp_path: Path,
    event: str,
    times: int,
) -> None:
    ids = {await cp.submit_task("work", {"n": n}) for n in range(150)}
    async with await WorkerProcess.start(
        config, tmp_path / "worker.err", agent="doomed", max_tasks=3
    ) as worker:
        for _ in range(times):
            await worker.expect(event)
        # Killed in the middle of its stream of claims and completions, wherever it is.
        await worker.kill()
        reported_done = {
            w[1] for w in (line.split() for line in worker.lines) if w[0] == "completed"
        }

    clock.advance(config.heartbeat_timeout + 1)
    await cp.reap()
    clock.advance(config.retry_backoff_max_s + 1)
    by_survivor = await _finish_everything(cp, "survivor")

    tasks = {task_id: await cp.get_task(task_id) for task_id in ids}
    assert all(t.status is TaskStatus.COMPLETED for t in tasks.values())
    by_doomed = {i for i, t in tasks.items() if t.result["agent"] == "doomed"}
    assert reported_done <= by_doomed  # a completion may land just before the kill
    assert by_doomed.isdisjoint(by_survivor)
    assert by_doomed | set(by_survivor) == ids
    for task_id, task in tasks.items():
        if task.attempt == 1:
            assert task.errors == ()
        else:  # held by the worker when it died
            assert task_id in by_survivor and task.attempt == 2
            assert [(e.error, e.agent_id) for e in task.errors] == [("agent offline", "doomed")]
    assert sum(t.attempt == 2 for t in tasks.values()) <= 3  # at most what it could hold
    counts = await cp.store.counts("default")
    assert (counts.completed, counts.running, counts.pending, counts.total) == (150, 0, 0, 150)
