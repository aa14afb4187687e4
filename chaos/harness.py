"""One run, start to end: processes up, load and faults together, heal, drain, count."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

from aragora import __version__
from chaos.accounting import account, read_store, store_counts
from chaos.cluster import KEY_PREFIX, WORKSPACE, Cluster
from chaos.execlog import read_events
from chaos.faults import FaultInjector, FaultRecord, Prober
from chaos.logscan import scan_logs
from chaos.scenario import Scenario
from chaos.submitter import SubmitStats, Submitter

SETUP_RESERVE_S = 30.0
"""Of the duration bound, kept for healing, draining and the final count."""
DRAIN_POLL_S = 0.5


async def run_scenario(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """Run ``scenario`` with processes and logs under ``workdir``; return the report."""
    started = time.monotonic()
    started_wall = time.time()
    hard_deadline = started + scenario.duration_bound_s
    async with Cluster(scenario, workdir) as cluster:
        setup_s = time.monotonic() - started
        budget_s = hard_deadline - time.monotonic() - scenario.drain_timeout_s - SETUP_RESERVE_S
        load_s = max(1.0, min(scenario.load_s, budget_s))
        load_end = time.monotonic() + load_s
        submitter = Submitter(scenario, cluster.urls, cluster.submitter_token)
        prober = Prober(cluster, cluster.submitter_token, scenario.recovery_timeout_s)
        injector = FaultInjector(cluster, scenario, prober)
        give_up_at = load_end + scenario.recovery_timeout_s
        try:
            submits, faults = await _load_and_faults(
                submitter, injector, load_s, load_end, give_up_at, hard_deadline
            )
            await cluster.heal()
            drained_s = await _drain(cluster, hard_deadline - SETUP_RESERVE_S / 2)
            # The count needs a store at rest: no agent may claim or finish meanwhile.
            cluster.stop_agents()
            settled_s = await _settle(cluster)
            async with cluster.admin() as admin:
                snapshot = await read_store(admin, cluster.redis.url, KEY_PREFIX, WORKSPACE)
        finally:
            await submitter.aclose()
            await prober.aclose()
    events = itertools.chain.from_iterable(read_events(a.exec_log) for a in cluster.agents)
    accounting = account(submitter.plans, submits, snapshot, events, faults, scenario.fault_kinds)
    log_errors = scan_logs(
        [s.log_path for s in cluster.servers], [a.log_path for a in cluster.agents]
    )
    http_500 = submits.transient_errors.get("ServerError", 0) + log_errors["server_status_500"]
    return {
        "ok": accounting.ok and http_500 == 0,
        "http_500": http_500,
        "log_errors": log_errors,
        "aragora_version": __version__,
        "scenario": scenario.to_dict(),
        "started_at": started_wall,
        "timings_s": {
            "setup": round(setup_s, 3),
            "load": round(load_s, 3),
            "drain": None if drained_s is None else round(drained_s, 3),
            "settle": None if settled_s is None else round(settled_s, 3),
            "total": round(time.monotonic() - started, 3),
        },
        "tasks": accounting.tasks,
        "executions": accounting.executions,
        "late_completions": accounting.late_completions,
        "faults": accounting.faults,
        "recovery_s": accounting.recovery_s,
        "invariants": accounting.invariants,
        "submits": accounting.submits,
        "restarts": {p.name: p.starts - 1 for p in cluster.processes()},
        "fault_log": [f.to_dict() for f in faults],
    }


async def _load_and_faults(
    submitter: Submitter,
    injector: FaultInjector,
    load_s: float,
    load_end: float,
    give_up_at: float,
    hard_deadline: float,
) -> tuple[SubmitStats, list[FaultRecord]]:
    """The load and the faults side by side; neither may run past the bound."""
    submitting = asyncio.create_task(submitter.run(load_s, give_up_at))
    injecting = asyncio.create_task(injector.run(load_end))
    limit_s = max(0.0, hard_deadline - SETUP_RESERVE_S - time.monotonic())
    done, pending = await asyncio.wait({submitting, injecting}, timeout=limit_s)
    for job in pending:
        job.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for job in done:
        job.result()
    return submitter.stats, injector.records


async def _drain(cluster: Cluster, deadline: float) -> float | None:
    """Seconds until no task is pending or running; None if ``deadline`` came first."""
    started = time.monotonic()
    deadline = min(deadline, started + cluster.scenario.drain_timeout_s)
    while True:
        counts = await store_counts(cluster.redis.url, KEY_PREFIX, WORKSPACE)
        if counts.pending == 0 and counts.running == 0:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(DRAIN_POLL_S)


async def _settle(cluster: Cluster) -> float | None:
    """Seconds until no task is running once the agents are gone (a task they still
    held is reaped after the heartbeat timeout); None past a few heartbeat timeouts."""
    started = time.monotonic()
    deadline = started + 3 * cluster.scenario.heartbeat_timeout_s + 10.0
    while True:
        counts = await store_counts(cluster.redis.url, KEY_PREFIX, WORKSPACE)
        if counts.running == 0:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(DRAIN_POLL_S)


def render(report: dict[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    tasks, faults, recovery = report["tasks"], report["faults"], report["recovery_s"]
    executions, late, invariants = (
        report["executions"],
        report["late_completions"],
        report["invariants"],
    )
    kinds = ", ".join(f"{k}={v}" for k, v in faults["by_kind"].items())
    lines = [
        f"chaos run {'PASSED' if report['ok'] else 'FAILED'}"
        f" (seed {report['scenario']['seed']}, {report['timings_s']['total']:.0f}s)",
        f"tasks: submitted {tasks['submitted']}, completed {tasks['completed']},"
        f" failed as designed {tasks['failed_as_designed']},"
        f" failed otherwise {tasks['failed_otherwise']}, pending {tasks['pending_at_end']}",
        f"lost: {tasks['lost']}   completed twice: {tasks['completed_twice']}",
        f"executions: {executions['total']} ({executions['tasks_run_more_than_once']} tasks"
        f" ran more than once, at most {executions['max_per_task']} times)",
        f"late completions: {late['rejected']} rejected, {late['recorded']} recorded",
        f"faults: {faults['total']} ({kinds})",
        f"recovery: p50 {recovery['p50']}s, p99 {recovery['p99']}s, max {recovery['max']}s,"
        f" not recovered {recovery['not_recovered']}",
        f"HTTP 500 answers: {report['http_500']}; logged errors: server"
        f" {report['log_errors']['server_errors']}, agent {report['log_errors']['agent_errors']}",
        f"invariants: {'ok' if invariants['ok'] else 'VIOLATED'}"
        f" ({invariants['tasks_checked']} tasks checked)",
    ]
    lines += [f"  {p}" for p in invariants["examples"]]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
