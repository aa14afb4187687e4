"""``aragora demo`` as a user runs it: a real process with its server and agents.

Each test reads the demo's children from /proc while it runs (processes whose parent
is the demo), so that after the demo exits it can check that none is left behind.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from typer.testing import CliRunner

from aragora.agent import Agent
from aragora.cli import app, load_agent
from aragora.client import AsyncControlPlaneClient
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.control_plane.models import TaskPriority, TaskStatus
from aragora.demo import DEFAULT_EXAMPLES_DIR
from aragora.demo.monitor import TASK_STATUSES, AgentView, BreakerWatch, Snapshot, parse_metrics
from aragora.demo.runner import EXAMPLE_AGENTS
from aragora.demo.traffic import TASK_KINDS, TaskStream, TrafficStats
from aragora.demo.view import summary_line

DEMO = (sys.executable, "-m", "aragora.cli", "demo", "--no-live", "--seed", "7")
CHILDREN = 4  # the server and three agents
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 40.0
FLAKY_AGENT_ID = "flaky-search-1"
_SUMMARY = re.compile(r"^summary: (.*)$", re.MULTILINE)


def _poll(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)  # noqa: sleep-ok (polling /proc, which has no change events)


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces or parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class DemoRun:
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def expect(self, prefix: str, timeout_s: float) -> str:
        """The next stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the demo printed no {prefix!r}; so far:\n" + "\n".join(self.seen))
            if line is None:
                pytest.fail(f"the demo ended before {prefix!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def finish(self) -> str:
        """Wait for the exit; everything it printed."""
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        while (line := self.lines.get(timeout=STOP_TIMEOUT_S)) is not None:
            self.seen.append(line)
        return "\n".join(self.seen)


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)
    stream.close()


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., DemoRun]]:
    runs: list[DemoRun] = []

    def start(*args: str) -> DemoRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARAGORA_")}
        proc = subprocess.Popen(
            [*DEMO, "--data-dir", str(tmp_path / "demo"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        run = DemoRun(proc)
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(proc.stdout, run.lines), daemon=True).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=STOP_TIMEOUT_S)


def _running_children(run: DemoRun) -> set[int]:
    """The demo's children once all of them run and the task stream has started."""
    run.expect("Dashboard: http://127.0.0.1:", START_TIMEOUT_S)
    _poll(
        lambda: len(_children_of(run.proc.pid)) >= CHILDREN,
        START_TIMEOUT_S,
        "the server and three agents",
    )
    return _children_of(run.proc.pid)


def _summary(output: str) -> dict[str, int]:
    match = _SUMMARY.search(output)
    assert match is not None, output
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


@pytest.mark.timeout(90)
async def test_demo_completes_tasks_retries_the_flaky_agent_and_exits_cleanly(
    start_demo: Callable[..., DemoRun], tmp_path: Path
) -> None:
    run = start_demo("--duration-s", "14", "--rate", "4")
    children = _running_children(run)
    output = run.finish()

    assert run.proc.returncode == 0, output
    assert not [pid for pid in children if _alive(pid)], "processes left behind"
    summary = _summary(output)
    assert summary["completed"] > 10, output
    assert summary["retried"] > 0, output
    assert summary["breaker_opened"] >= 1, output
    assert summary["refused"] == 0, output
    assert f"breaker of {FLAKY_AGENT_ID}: closed -> open" in output

    # The store the demo left behind: the flaky agent's failed attempts were retried.
    config = ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'demo' / 'state.db'}")
    async with ControlPlaneCoordinator(config) as cp:
        tasks = (await cp.list_tasks(limit=1000)).tasks
    retried = [t for t in tasks if t.attempt > 1]
    assert retried
    assert all(t.task_type == "search" for t in retried)
    assert any(e.agent_id == FLAKY_AGENT_ID for t in retried for e in t.errors)
    assert any(t.status is TaskStatus.COMPLETED for t in retried)
    completed_types = {t.task_type for t in tasks if t.status is TaskStatus.COMPLETED}
    assert {"summarize", "code"} <= completed_types


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_agents_and_server_and_exits_zero(
    start_demo: Callable[..., DemoRun], sig: signal.Signals
) -> None:
    run = start_demo("--rate", "4")
    children = _running_children(run)
    run.expect("t=", START_TIMEOUT_S)

    run.proc.send_signal(sig)
    output = run.finish()

    assert run.proc.returncode == 0, output
    assert "stopping: agents drain, then the server stops" in output
    assert "summary: submitted=" in output
    assert "warning:" not in output
    assert not [pid for pid in children if _alive(pid)], "processes left behind"


# -- the pieces, in-process ------------------------------------------------------------
METRICS_TEXT = """\
# HELP aragora_queue_tasks Tasks by status.
# TYPE aragora_queue_tasks gauge
aragora_queue_tasks{status="pending",workspace="default"} 3.0
aragora_queue_tasks{status="completed",workspace="default"} 40.0
aragora_queue_tasks{status="completed",workspace="lab"} 2.0
aragora_queue_tasks{status="failed",workspace="default"} 1.0
# HELP aragora_queue_delayed_tasks Tasks waiting out a retry backoff.
# TYPE aragora_queue_delayed_tasks gauge
aragora_queue_delayed_tasks{workspace="default"} 2.0
# HELP aragora_tasks_retried Failed attempts that sent their task back to pending.
# TYPE aragora_tasks_retried counter
aragora_tasks_retried_total{priority="high",workspace="default"} 4.0
aragora_tasks_retried_total{priority="low",workspace="default"} 1.0
"""


def test_metrics_give_counts_by_status_summed_over_workspaces() -> None:
    counts, retried = parse_metrics(METRICS_TEXT)
    assert counts == {
        "pending": 3,
        "delayed": 2,
        "running": 0,
        "completed": 42,
        "failed": 1,
        "cancelled": 0,
    }
    assert retried == 5


def _snapshot(*states: tuple[str, str]) -> Snapshot:
    agents = tuple(
        AgentView(agent_id, "m", ("c",), "idle", state, 0.0, 0, 1) for agent_id, state in states
    )
    return Snapshot(0.0, dict.fromkeys(TASK_STATUSES, 0), 0, agents, ())


def test_breaker_watch_counts_each_opening_and_closing_once() -> None:
    watch = BreakerWatch()
    assert watch.observe(_snapshot(("a", "closed"), ("b", "closed"))) == []
    assert watch.observe(_snapshot(("a", "open"), ("b", "closed"))) == [("a", "closed", "open")]
    assert watch.observe(_snapshot(("a", "open"), ("b", "closed"))) == []
    watch.observe(_snapshot(("a", "half_open"), ("b", "closed")))
    watch.observe(_snapshot(("a", "closed"), ("b", "closed")))
    watch.observe(_snapshot(("a", "open"), ("b", "closed")))
    assert watch.opened == {"a": 2}
    assert watch.closed == {"a": 1}


def test_summary_line_reports_what_the_demo_saw() -> None:
    watch = BreakerWatch(opened={"flaky": 2}, closed={"flaky": 1})
    line = summary_line(None, TrafficStats(submitted=5, refused=1), watch)
    assert line == (
        "summary: submitted=5 refused=1 pending=0 delayed=0 running=0 completed=0 failed=0 "
        "cancelled=0 retried=0 breaker_opened=2 breaker_closed=1"
    )


async def test_the_task_stream_mixes_every_kind_and_priority_repeatably() -> None:
    # next_task only draws; the client (nothing listens there) is never called.
    async with AsyncControlPlaneClient("http://127.0.0.1:9", "unused") as client:
        streams = [TaskStream(client, rate_per_s=1.0, seed=seed) for seed in (3, 3, 4)]
        draws = [[s.next_task() for _ in range(400)] for s in streams]
    first = [(kind.task_type, priority) for kind, priority in draws[0]]
    assert first == [(kind.task_type, priority) for kind, priority in draws[1]]
    assert first != [(kind.task_type, priority) for kind, priority in draws[2]]
    assert {t for t, _ in first} == {k.task_type for k in TASK_KINDS}
    assert {p for _, p in first} == set(TaskPriority)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be greater than 0"),
        (["--duration-s", "-1"], "--duration-s must be greater than 0"),
        (["--sign-in-role", "agent"], "--sign-in-role must be one of viewer, operator, admin"),
        (["--examples-dir", "/nonexistent"], "lacks summarizer_agent.py"),
    ],
)
def test_bad_options_exit_2_naming_the_option_and_start_nothing(
    args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["demo", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_example_agents_are_sdk_agents_with_distinct_capabilities_and_models() -> None:
    agents = [load_agent(str(DEFAULT_EXAMPLES_DIR / name)) for name in EXAMPLE_AGENTS]
    assert all(isinstance(a, Agent) for a in agents)
    assert len({a.model for a in agents}) == len(agents)
    assert len({frozenset(a.capabilities) for a in agents}) == len(agents)
    served = {t for a in agents for t in a.task_types}
    assert {k.task_type for k in TASK_KINDS} <= served
