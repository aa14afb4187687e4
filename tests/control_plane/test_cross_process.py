"""Waiting works across processes: a caller here, a worker agent in another process.

The worker (``helpers/worker.py``) shares only the store with this process: the same
SQLite file or the same Redis key prefix, passed through ``ARAGORA_*`` variables.
Waiting never polls in the test: it rests on the store's notifications (Redis pub/sub,
SQLite's watch for other connections' commits).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator, TaskStatus
from tests.control_plane.helpers.process import WorkerProcess

WAKE_DEADLINE_S = 10.0


async def test_caller_waiting_for_a_result_wakes_when_another_process_completes_the_task(
    cp: ControlPlaneCoordinator, config: ControlPlaneConfig, tmp_path: Path
) -> None:
    task_id = await cp.submit_task("summarize", {"doc": 1})
    waiting = asyncio.create_task(cp.wait_for_result(task_id, timeout=45))
    async with await WorkerProcess.start(
        config, tmp_path / "worker.err", agent="remote", count=1, wait_s=20, gate=True
    ) as worker:
        claimed = await worker.expect("claimed")
        assert claimed[1] == task_id
        # The task runs elsewhere and the caller stays parked meanwhile.
        done, _ = await asyncio.wait({waiting}, timeout=0.2)
        assert not done
        assert (await cp.get_task(task_id)).status is TaskStatus.RUNNING

        await worker.send_line("go")
        result = await asyncio.wait_for(waiting, WAKE_DEADLINE_S)
        assert result["agent"] == "remote"
        assert result["pid"] == worker.proc.pid
        await worker.expect("done")
        await worker.wait_exit()
    task = await cp.get_task(task_id)
    assert task.status is TaskStatus.COMPLETED and task.attempt == 1


async def test_caller_waiting_before_the_task_is_even_claimed_gets_the_result(
    cp: ControlPlaneCoordinator, config: ControlPlaneConfig, tmp_path: Path
) -> None:
    task_id = await cp.submit_task("summarize", {"doc": 2})
    waiting = asyncio.create_task(cp.wait_for_result(task_id, timeout=45))
    async with await WorkerProcess.start(
        config, tmp_path / "worker.err", agent="remote", count=1, wait_s=20
    ) as worker:
        await worker.expect("done")
        result = await asyncio.wait_for(waiting, WAKE_DEADLINE_S)
        assert result == {"agent": "remote", "pid": worker.proc.pid}
        await worker.wait_exit()


async def test_result_completed_by_another_process_before_the_wait_is_returned_at_once(
    cp: ControlPlaneCoordinator, config: ControlPlaneConfig, tmp_path: Path
) -> None:
    task_id = await cp.submit_task("summarize", {"doc": 3})
    async with await WorkerProcess.start(
        config, tmp_path / "worker.err", agent="remote", count=1
    ) as worker:
        assert (await worker.expect("completed"))[1] == task_id
        await worker.wait_exit()
    # A wait that begins after completion must not depend on a notification.
    result = await cp.wait_for_result(task_id, timeout=0)
    assert result["agent"] == "remote"


async def test_worker_process_waiting_for_work_is_woken_by_a_submit_in_this_process(
    cp: ControlPlaneCoordinator, config: ControlPlaneConfig, tmp_path: Path
) -> None:
    async with await WorkerProcess.start(
        config, tmp_path / "worker.err", agent="remote", count=2, wait_s=30
    ) as worker:
        await worker.expect("waiting")
        await worker.expect_silence(0.2)  # parked in its long-poll claim
        first = await cp.submit_task("summarize", {"doc": 4})
        assert (await worker.expect("claimed", WAKE_DEADLINE_S))[1] == first
        assert (await cp.wait_for_result(first, timeout=WAKE_DEADLINE_S))["agent"] == "remote"

        await worker.expect("waiting")
        await worker.expect_silence(0.2)
        second = await cp.submit_task("summarize", {"doc": 5})
        assert (await cp.wait_for_result(second, timeout=WAKE_DEADLINE_S))["agent"] == "remote"
        await worker.expect("done")
        await worker.wait_exit()
    counts = await cp.store.counts("default")
    assert (counts.completed, counts.total) == (2, 2)
