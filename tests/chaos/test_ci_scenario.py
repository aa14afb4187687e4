"""The CI chaos scenario: real Redis, servers and agents under every fault kind lose no
task and complete none twice (``python -m chaos run --profile ci``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from chaos.scenario import FaultKind

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 280


@pytest.mark.timeout(300)
def test_ci_scenario_loses_no_task_and_completes_none_twice(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "run",
            "--profile",
            "ci",
            "--report",
            str(report_path),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())

    assert report["ok"] is True
    injected = report["faults"]["by_kind"]
    assert all(injected[kind.value] >= 1 for kind in FaultKind), injected
    tasks = report["tasks"]
    assert tasks["submitted"] == tasks["planned"]
    assert tasks["lost"] == 0
    assert tasks["completed_twice"] == 0
    assert tasks["completed"] + tasks["failed_as_designed"] + tasks["failed_otherwise"] == (
        tasks["submitted"] - tasks["pending_at_end"] - tasks["cancelled"]
    )
    assert report["invariants"]["ok"] is True, report["invariants"]["examples"]
    assert report["late_completions"]["recorded"] == 0
    assert report["recovery_s"]["not_recovered"] == 0
    assert report["http_500"] == 0
    assert report["executions"]["total"] >= tasks["completed"]


def test_help_lists_the_run_command_and_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for option in ("--profile", "--seed", "--duration-bound-s", "--faults", "--report"):
        assert option in done.stdout


def test_an_unknown_fault_kind_is_refused_with_the_choices() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", "--faults", "agent_kill,meteor"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "meteor" in done.stderr and "connection_drop" in done.stderr
