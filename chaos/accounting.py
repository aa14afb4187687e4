"""The count at the end: every task read back from the store, every execution from the
agents' logs, and the store's invariants checked.

Definitions (the report uses these names):

* **lost**: acknowledged by a submit but, at the end, neither terminal nor pending
  (missing from the store, or still running once every agent has stopped and the
  reaper has had its turn);
* **completed twice**: the store accepted more than one completion for the task (two
  ``accepted`` complete reports in the agents' logs), or its recorded result is not the
  one of its last attempt, or its attempts do not add up to exactly one success;
* **executions**: handler starts in the agents' logs; more than one per task is allowed
  (at-least-once) and counted;
* **late completion rejected**: a complete or fail of an agent that was SIGSTOPped
  while running that attempt, sent after SIGCONT and rejected by the server; **late
  completion recorded** is one whose result the store kept anyway.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aragora.client import AsyncControlPlaneClient
from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.models import AgentInfo, Task, TaskCounts, TaskStatus
from aragora.store.redis import RedisStore
from chaos.faults import FaultRecord
from chaos.scenario import FaultKind
from chaos.submitter import SubmitStats, TaskPlan

LIST_PAGE = 1_000
MAX_LISTED_VIOLATIONS = 20


@dataclass
class StoreSnapshot:
    """Everything read back from the store at the end."""

    tasks: dict[str, Task]
    by_status: dict[TaskStatus, set[str]]
    counts: TaskCounts
    agents: list[AgentInfo]


async def _list_all(client: AsyncControlPlaneClient, status: TaskStatus | None) -> list[Task]:
    tasks: list[Task] = []
    cursor: str | None = None
    while True:
        page = await client.list_tasks(status=status, limit=LIST_PAGE, cursor=cursor)
        tasks.extend(page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            return tasks


async def read_store(
    admin: AsyncControlPlaneClient, redis_url: str, key_prefix: str, workspace: str
) -> StoreSnapshot:
    """Tasks and agents through the admin API; the counters from the store itself."""
    tasks = {t.id: t for t in await _list_all(admin, None)}
    by_status = {s: {t.id for t in await _list_all(admin, s)} for s in TaskStatus}
    agents = await admin.list_agents()
    store = RedisStore(ControlPlaneConfig(redis_url=redis_url, key_prefix=key_prefix), redis_url)
    await store.open()
    try:
        counts = await store.counts(workspace)
    finally:
        await store.close()
    return StoreSnapshot(tasks, by_status, counts, agents)


async def store_counts(redis_url: str, key_prefix: str, workspace: str) -> TaskCounts:
    store = RedisStore(ControlPlaneConfig(redis_url=redis_url, key_prefix=key_prefix), redis_url)
    await store.open()
    try:
        return await store.counts(workspace)
    finally:
        await store.close()


def check_invariants(snapshot: StoreSnapshot) -> list[str]:
    """Every violation of "every task in exactly one state" and its corollaries."""
    problems: list[str] = []
    tasks, by_status = snapshot.tasks, snapshot.by_status
    for task_id, task in tasks.items():
        places = [s for s in TaskStatus if task_id in by_status[s]]
        if places != [task.status]:
            problems.append(f"task {task_id} is {task.status} but listed under {places}")
    listed = set().union(*by_status.values())
    if listed != set(tasks):
        problems.append(
            f"{len(listed - set(tasks))} tasks listed by status only,"
            f" {len(set(tasks) - listed)} listed only without a status"
        )
    counts = snapshot.counts
    for status, counted in (
        (TaskStatus.PENDING, counts.pending),
        (TaskStatus.RUNNING, counts.running),
        (TaskStatus.COMPLETED, counts.completed),
        (TaskStatus.FAILED, counts.failed),
        (TaskStatus.CANCELLED, counts.cancelled),
    ):
        if counted != len(by_status[status]):
            problems.append(f"store counts {counted} {status} but lists {len(by_status[status])}")
    if counts.total != len(tasks):
        problems.append(f"store counts {counts.total} tasks in all but lists {len(tasks)}")
    holders: dict[str, list[str]] = defaultdict(list)
    for agent in snapshot.agents:
        if len(agent.running_task_ids) > agent.max_concurrent_tasks:
            problems.append(f"agent {agent.agent_id} holds more tasks than it may")
        for task_id in agent.running_task_ids:
            holders[task_id].append(agent.agent_id)
    for task_id, task in tasks.items():
        if task.status is TaskStatus.RUNNING:
            if holders.get(task_id) != [task.agent_id] or task.lease_token is None:
                problems.append(f"running task {task_id} is held by {holders.get(task_id)}")
        elif task_id in holders or task.lease_token is not None:
            problems.append(f"{task.status} task {task_id} is still leased")
        problems.extend(_attempt_problems(task))
    return problems


def _attempt_problems(task: Task) -> list[str]:
    numbers = [e.attempt for e in task.errors]
    if numbers != list(range(1, len(numbers) + 1)):
        return [f"task {task.id} has attempt errors numbered {numbers}"]
    unfinished = task.attempt - len(task.errors)  # attempts that ended without an error
    allowed = {
        TaskStatus.PENDING: {0},
        TaskStatus.FAILED: {0},
        TaskStatus.RUNNING: {1},
        TaskStatus.COMPLETED: {1},
        TaskStatus.CANCELLED: {0, 1},
    }[task.status]
    if unfinished not in allowed:
        return [f"{task.status} task {task.id} has {task.attempt} attempts, {len(numbers)} errors"]
    if task.status is TaskStatus.FAILED and task.error != task.errors[-1].error:
        return [f"failed task {task.id} reports an error other than its last attempt's"]
    return []


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class Accounting:
    """The numbers of the report."""

    tasks: dict[str, Any] = field(default_factory=dict)
    executions: dict[str, Any] = field(default_factory=dict)
    late_completions: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    recovery_s: dict[str, Any] = field(default_factory=dict)
    invariants: dict[str, Any] = field(default_factory=dict)
    submits: dict[str, Any] = field(default_factory=dict)
    lost_ids: list[str] = field(default_factory=list)
    twice_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.lost_ids
            and not self.twice_ids
            and self.invariants.get("ok", False)
            and not self.late_completions.get("recorded", 0)
            and not self.submits.get("idempotency_violations")
            and not self.recovery_s.get("not_recovered", 0)
        )


def account(
    plans: Sequence[TaskPlan],
    submits: SubmitStats,
    snapshot: StoreSnapshot,
    events: Iterable[dict[str, Any]],
    faults: Sequence[FaultRecord],
    fault_kinds: Sequence[FaultKind],
) -> Accounting:
    """Reconcile what was submitted, what the agents did and what the store holds."""
    out = Accounting()
    tasks = snapshot.tasks
    designed = {p.number for p in plans if p.designed_to_fail}

    starts: Counter[str] = Counter()
    accepted_completes: Counter[str] = Counter()
    rejected_reports: list[dict[str, Any]] = []
    starts_by_attempt: dict[tuple[str, str, int], float] = {}
    for ev in events:
        kind = ev.get("ev")
        task_id = str(ev.get("task"))
        if kind == "start" and ev.get("chaos") is not None:
            starts[task_id] += 1
            starts_by_attempt[(str(ev.get("agent")), task_id, int(ev.get("attempt") or 0))] = float(
                ev.get("t") or 0.0
            )
        elif kind == "report":
            if ev.get("outcome") == "accepted" and ev.get("kind") == "complete":
                accepted_completes[task_id] += 1
            elif ev.get("outcome") == "rejected":
                rejected_reports.append(ev)

    # -- tasks -------------------------------------------------------------------------
    acknowledged = set(submits.acknowledged.values())
    work = {i: t for i, t in tasks.items() if t.task_type == "work"}
    numbers: defaultdict[Any, list[str]] = defaultdict(list)
    for task in work.values():
        if isinstance(task.payload, dict):
            numbers[task.payload.get("chaos")].append(task.id)
    duplicated_numbers = {n: ids for n, ids in numbers.items() if len(ids) > 1}

    lost = sorted(
        i for i in acknowledged if i not in tasks or tasks[i].status is TaskStatus.RUNNING
    )
    status_counts = Counter(str(t.status) for t in work.values())
    failed_as_designed = failed_other = 0
    for task in work.values():
        if task.status is TaskStatus.FAILED:
            number = task.payload.get("chaos") if isinstance(task.payload, dict) else None
            if number in designed:
                failed_as_designed += 1
            else:
                failed_other += 1

    twice: set[str] = {i for i, n in accepted_completes.items() if n > 1}
    for task in work.values():
        if task.status is not TaskStatus.COMPLETED:
            continue
        result = task.result if isinstance(task.result, dict) else {}
        if result.get("attempt") != task.attempt or task.attempt - len(task.errors) != 1:
            twice.add(task.id)
    for ids in duplicated_numbers.values():
        twice.update(ids[1:])

    out.tasks = {
        "planned": len(plans),
        "submitted": len(acknowledged),
        "in_store": len(work),
        "unacknowledged_in_store": len(set(work) - acknowledged),
        "completed": status_counts.get("completed", 0),
        "failed_as_designed": failed_as_designed,
        "failed_otherwise": failed_other,
        "cancelled": status_counts.get("cancelled", 0),
        "pending_at_end": status_counts.get("pending", 0),
        "lost": len(lost),
        "completed_twice": len(twice),
        "duplicate_tasks_for_one_key": len(duplicated_numbers),
        "probes": len(tasks) - len(work),
    }
    out.lost_ids = lost[:MAX_LISTED_VIOLATIONS]
    out.twice_ids = sorted(twice)[:MAX_LISTED_VIOLATIONS]
    if lost:
        out.tasks["lost_examples"] = out.lost_ids
    if twice:
        out.tasks["completed_twice_examples"] = out.twice_ids

    # -- executions ----------------------------------------------------------------------
    histogram = Counter(starts[i] for i in work)
    out.executions = {
        "total": sum(starts[i] for i in work),
        "tasks_by_executions": {str(k): v for k, v in sorted(histogram.items())},
        "tasks_run_more_than_once": sum(v for k, v in histogram.items() if k > 1),
        "max_per_task": max(histogram, default=0),
    }

    # -- late completions ------------------------------------------------------------------
    stops = [
        (f.target, float(f.detail["stopped_at"]), float(f.detail["continued_at"]))
        for f in faults
        if f.kind is FaultKind.AGENT_STOP and "continued_at" in f.detail
    ]
    late: set[tuple[str, str, int]] = set()
    for ev in rejected_reports:
        agent, task_id, attempt = str(ev.get("agent")), str(ev.get("task")), int(ev["attempt"])
        started = starts_by_attempt.get((agent, task_id, attempt))
        if started is None:
            continue
        t = float(ev.get("t") or 0.0)
        if any(a == agent and started < s and t > c for a, s, c in stops):
            late.add((agent, task_id, attempt))
    recorded = 0
    for task in work.values():
        if task.status is TaskStatus.COMPLETED and isinstance(task.result, dict):
            recorded_by = task.result.get("agent"), task.result.get("attempt") or 0
            recorded += (str(recorded_by[0]), task.id, int(recorded_by[1])) in late
    out.late_completions = {
        "rejected": len(late),
        "recorded": recorded,
        "all_rejected_reports": len(rejected_reports),
        "rejected_by_status": dict(Counter(str(e.get("status")) for e in rejected_reports)),
    }

    # -- faults and recovery -------------------------------------------------------
    by_kind = Counter(str(f.kind) for f in faults)
    out.faults = {
        "total": len(faults),
        "by_kind": {str(k): by_kind.get(str(k), 0) for k in fault_kinds},
    }
    recoveries = [f.recovery_s for f in faults if f.recovery_s is not None]
    per_kind: dict[str, dict[str, float | None]] = {}
    for kind in fault_kinds:
        values = [f.recovery_s for f in faults if f.kind is kind and f.recovery_s is not None]
        per_kind[str(kind)] = {
            "p50": _round(percentile(values, 50)),
            "p99": _round(percentile(values, 99)),
            "max": _round(max(values, default=None)),
        }
    out.recovery_s = {
        "p50": _round(percentile(recoveries, 50)),
        "p99": _round(percentile(recoveries, 99)),
        "mean": _round(statistics.fmean(recoveries) if recoveries else None),
        "max": _round(max(recoveries, default=None)),
        "not_recovered": sum(1 for f in faults if f.recovery_s is None),
        "by_kind": per_kind,
    }

    # -- invariants and submits -----------------------------------------------------
    problems = check_invariants(snapshot)
    out.invariants = {
        "ok": not problems,
        "tasks_checked": len(tasks),
        "violations": len(problems),
        "examples": problems[:MAX_LISTED_VIOLATIONS],
    }
    out.submits = {
        "duplicates_sent": submits.duplicates_sent,
        "duplicates_same_task": submits.duplicates_same_task,
        "idempotency_violations": len(submits.idempotency_violations),
        "transient_errors": dict(submits.transient_errors),
        "rejected": len(submits.rejected),
        "rejected_examples": submits.rejected[:MAX_LISTED_VIOLATIONS],
        "abandoned": len(submits.abandoned),
    }
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
