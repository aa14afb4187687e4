"""The final count catches what it exists to catch: a lost task, a task completed
twice, a late completion the store kept, and a store whose states do not add up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaos.accounting import StoreSnapshot, account, check_invariants, percentile
from chaos.execlog import ExecutionLog, read_events
from chaos.faults import FaultRecord
from chaos.scenario import FaultKind
from chaos.submitter import SubmitStats, TaskPlan

from aragora.control_plane.models import (
    AttemptError,
    Task,
    TaskCounts,
    TaskPriority,
    TaskStatus,
)


def _task(number: int, status: TaskStatus, attempt: int = 1, **fields: Any) -> Task:
    values: dict[str, Any] = {
        "id": f"t{number}",
        "task_type": "work",
        "payload": {"chaos": number, "fail": False},
        "priority": TaskPriority.NORMAL,
        "status": status,
        "required_capabilities": (),
        "workspace_id": "default",
        "attempt": attempt,
        "max_retries": 3,
        "timeout_s": 10.0,
        "created_at": 0.0,
    }
    if status is TaskStatus.COMPLETED:
        values["result"] = {"chaos": number, "agent": "a", "attempt": attempt}
    values.update(fields)
    return Task(**values)


def _snapshot(tasks: list[Task]) -> StoreSnapshot:
    by_status = {s: {t.id for t in tasks if t.status is s} for s in TaskStatus}
    counts = TaskCounts(
        pending=len(by_status[TaskStatus.PENDING]),
        delayed=0,
        running=len(by_status[TaskStatus.RUNNING]),
        completed=len(by_status[TaskStatus.COMPLETED]),
        failed=len(by_status[TaskStatus.FAILED]),
        cancelled=len(by_status[TaskStatus.CANCELLED]),
    )
    return StoreSnapshot({t.id: t for t in tasks}, by_status, counts, [])


def _plans(n: int) -> list[TaskPlan]:
    return [TaskPlan(i, TaskPriority.NORMAL, (), False, False) for i in range(n)]


def _submits(n: int) -> SubmitStats:
    return SubmitStats(acknowledged={i: f"t{i}" for i in range(n)})


def _report(agent: str, task: str, attempt: int, outcome: str, t: float) -> dict[str, Any]:
    return {
        "ev": "report",
        "kind": "complete",
        "task": task,
        "attempt": attempt,
        "agent": agent,
        "outcome": outcome,
        "status": 200 if outcome == "accepted" else 409,
        "t": t,
    }


def test_a_clean_run_counts_nothing_lost_and_nothing_twice() -> None:
    tasks = [_task(0, TaskStatus.COMPLETED), _task(1, TaskStatus.PENDING, attempt=0)]
    events = [
        {"ev": "start", "task": "t0", "attempt": 1, "agent": "a", "chaos": 0, "t": 1.0},
        _report("a", "t0", 1, "accepted", 2.0),
    ]
    out = account(_plans(2), _submits(2), _snapshot(tasks), events, [], [])
    assert out.ok
    assert out.tasks["lost"] == 0 and out.tasks["completed_twice"] == 0
    assert out.tasks["pending_at_end"] == 1
    assert out.executions["total"] == 1


def test_a_missing_task_and_a_task_still_running_are_lost() -> None:
    running = _task(1, TaskStatus.RUNNING, lease_token="L", agent_id="a")
    snapshot = _snapshot([_task(0, TaskStatus.COMPLETED), running])
    out = account(_plans(3), _submits(3), snapshot, [], [], [])
    assert not out.ok
    assert out.tasks["lost"] == 2
    assert set(out.lost_ids) == {"t1", "t2"}


def test_two_accepted_completions_of_one_task_count_as_completed_twice() -> None:
    events = [
        _report("a", "t0", 1, "accepted", 1.0),
        _report("b", "t0", 2, "accepted", 2.0),
    ]
    tasks = [_task(0, TaskStatus.COMPLETED, attempt=2, errors=())]
    out = account(_plans(1), _submits(1), _snapshot(tasks), events, [], [])
    assert out.tasks["completed_twice"] == 1
    assert not out.ok


def test_a_result_of_an_earlier_attempt_counts_as_completed_twice() -> None:
    stale = _task(0, TaskStatus.COMPLETED, attempt=2, result={"agent": "a", "attempt": 1})
    out = account(_plans(1), _submits(1), _snapshot([stale]), [], [], [])
    assert out.tasks["completed_twice"] == 1


def test_a_late_completion_after_sigcont_is_counted_and_must_not_be_recorded() -> None:
    stop = FaultRecord(1, FaultKind.AGENT_STOP, "a", started_at=10.0, recovery_s=0.5)
    stop.detail.update(stopped_at=10.0, continued_at=20.0)
    events = [
        {"ev": "start", "task": "t0", "attempt": 1, "agent": "a", "chaos": 0, "t": 9.0},
        _report("a", "t0", 1, "rejected", 21.0),
        {"ev": "start", "task": "t0", "attempt": 2, "agent": "b", "chaos": 0, "t": 15.0},
        _report("b", "t0", 2, "accepted", 16.0),
    ]
    kept_by_b = _task(
        0,
        TaskStatus.COMPLETED,
        attempt=2,
        errors=(AttemptError(1, "lease expired", "a", 14.0),),
        result={"agent": "b", "attempt": 2},
    )
    snapshot = _snapshot([kept_by_b])
    out = account(_plans(1), _submits(1), snapshot, events, [stop], [FaultKind.AGENT_STOP])
    assert out.late_completions == {
        "rejected": 1,
        "recorded": 0,
        "all_rejected_reports": 1,
        "rejected_by_status": {"409": 1},
    }
    assert out.ok
    assert out.executions["tasks_by_executions"] == {"2": 1}


def test_a_task_listed_under_two_statuses_violates_the_invariants() -> None:
    snapshot = _snapshot([_task(0, TaskStatus.COMPLETED)])
    snapshot.by_status[TaskStatus.PENDING].add("t0")
    problems = check_invariants(snapshot)
    assert any("listed under" in p for p in problems)
    assert any("counts 0 pending but lists 1" in p for p in problems)


def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_fresh_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.exec.jsonl"
    log = ExecutionLog(path)
    log.write({"ev": "start", "task": "t0"})
    log.close()
    with path.open("ab") as handle:
        handle.write(b'{"ev": "end", "ta')  # a writer killed mid-line
    log = ExecutionLog(path)
    log.write({"ev": "start", "task": "t1"})
    log.close()
    assert [e["task"] for e in read_events(path)] == ["t0", "t1"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
