"""The command line: ``python -m chaos run [--profile ci|long] [options]``.

Exit status: 0 when nothing was lost, nothing completed twice, the store's invariants
hold, no late completion was recorded, no request was answered with a 500 and every
fault was recovered from; 1 otherwise;
2 on bad usage or when the processes could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from chaos.harness import render, run_scenario, write_report
from chaos.procs import ProcessStartError
from chaos.scenario import PROFILES, FaultKind, Scenario

_OVERRIDES = (
    ("--seed", "seed", int, "seed of every random choice"),
    ("--duration-bound-s", "duration_bound_s", float, "the run ends within this many seconds"),
    ("--load-s", "load_s", float, "seconds over which the tasks are submitted"),
    ("--servers", "servers", int, "aragora serve instances"),
    ("--agents", "agents", int, "agent processes"),
    ("--concurrency", "agent_concurrency", int, "tasks each agent runs at once"),
    ("--tasks", "tasks", int, "tasks to submit"),
    ("--failure-rate", "failure_rate", float, "chance that one execution fails (retryable)"),
    ("--drain-timeout-s", "drain_timeout_s", float, "wait this long for the tasks to end"),
)


def _fault_kinds(text: str) -> tuple[FaultKind, ...]:
    try:
        return tuple(FaultKind(k.strip()) for k in text.split(",") if k.strip())
    except ValueError as exc:
        choices = ", ".join(k.value for k in FaultKind)
        raise argparse.ArgumentTypeError(f"{exc}; choose from {choices}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Fault injection against real Redis, aragora servers and agents on"
        " loopback: counts every task and checks the store at the end.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run a scenario and write its report",
        description="Start Redis (AOF), servers, agents and a submitter; inject faults on a"
        " seeded schedule; print the report and write it as JSON. Options override the"
        " profile's settings.",
    )
    run.add_argument(
        "--profile", choices=sorted(PROFILES), default="ci", help="preset (default: ci)"
    )
    for flag, dest, kind, text in _OVERRIDES:
        run.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    run.add_argument(
        "--faults",
        dest="fault_kinds",
        type=_fault_kinds,
        default=None,
        help="comma-separated fault kinds (default: all): " + ", ".join(k.value for k in FaultKind),
    )
    run.add_argument(
        "--report", type=Path, default=Path("chaos-report.json"), help="where to write JSON"
    )
    run.add_argument(
        "--workdir", type=Path, default=None, help="keep logs here (default: a temp dir)"
    )
    return parser


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    changes: dict[str, Any] = {
        dest: getattr(args, dest) for _, dest, _, _ in _OVERRIDES if getattr(args, dest) is not None
    }
    if args.fault_kinds is not None:
        changes["fault_kinds"] = args.fault_kinds
    return PROFILES[args.profile].replace(**changes)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        scenario = scenario_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aragora-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(run_scenario(scenario, workdir))
    except ProcessStartError as exc:
        print(f"chaos: could not start the processes: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["workdir"] = str(args.workdir) if args.workdir else None
    write_report(report, args.report)
    print(render(report))
    print(f"report: {args.report}")
    raise SystemExit(0 if report["ok"] else 1)
