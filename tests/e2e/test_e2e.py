"""End to end: real ``aragora serve`` processes, real agent processes, the real CLI.

Agents run with tokens of role ``agent`` and tasks are submitted with tokens of role
``submitter``, both issued through ``aragora token create``.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from aragora.client import ControlPlaneClient
from aragora.control_plane import AgentNotFoundError, TaskFailedError, TaskStatus
from tests.e2e.conftest import (
    CLI,
    EXAMPLES,
    SCRIPTED_AGENT,
    Processes,
    ServerProc,
    free_port,
    run_cli,
    unique,
)

WAIT_S = 30.0


def test_submit_wait_via_cli_returns_the_agents_result(
    shared_procs: Processes, shared_server: ServerProc
) -> None:
    cap = unique("echo")
    shared_procs.agent(shared_server, capabilities=[cap])

    submitter = shared_server.role_token("submitter")
    done = run_cli(
        "task", "submit", "echo", "--payload", '{"label": "hi", "n": 1}',
        "--priority", "high", "-c", cap, "--wait", "--timeout-wait", str(WAIT_S), "--json",
        server=shared_server, token=submitter,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["status"] == "completed"
    assert task["priority"] == "high"
    assert task["result"]["echo"] == {"label": "hi", "n": 1}
    assert task["cost"] == 0.25
    assert task["lease_token"] is None

    shown = run_cli("task", "get", task["id"], "--json", server=shared_server, token=submitter)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["result"] == task["result"]


def test_priority_order_over_http(shared_procs: Processes, shared_server: ServerProc) -> None:
    cap = unique("prio")
    with shared_server.client(shared_server.role_token("submitter")) as cp:
        ids = {
            prio: cp.submit_task("echo", {"label": prio}, [cap], priority=prio)
            for prio in ("low", "normal", "critical", "high")
        }
        agent = shared_procs.agent(shared_server, capabilities=[cap], concurrency=1)
        for task_id in ids.values():
            assert cp.wait_for_task(task_id, WAIT_S).status is TaskStatus.COMPLETED

    ran = [agent.expect("RAN").split()[2] for _ in ids]
    assert ran == ["critical", "high", "normal", "low"]


def test_failing_handler_is_retried_then_failed_with_every_error(procs: Processes) -> None:
    server = procs.server(
        env={"ARAGORA_RETRY_BACKOFF_BASE_S": "0.05", "ARAGORA_MAX_TASK_RETRIES": "2"}
    )
    cap = unique("fail")
    procs.agent(server, capabilities=[cap])
    submitter = server.role_token("submitter")
    with server.client(submitter) as cp:
        task_id = cp.submit_task("fail", {"label": "f"}, [cap])
        with pytest.raises(TaskFailedError) as failed:
            cp.wait_for_result(task_id, WAIT_S)
        task = cp.get_task(task_id)

    assert task.status is TaskStatus.FAILED
    assert task.attempt == 3
    assert [e.error for e in task.errors] == [f"boom on attempt {n}" for n in (1, 2, 3)]
    assert len(failed.value.errors) == 3

    waited = run_cli("task", "wait", task_id, "--json", server=server, token=submitter)
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["status"] == "failed"
    assert waited.stderr.count("\n") == 1 and "boom on attempt 3" in waited.stderr


def test_agent_killed_mid_task_loses_nothing(procs: Processes) -> None:
    fast = {
        "ARAGORA_HEARTBEAT_TIMEOUT": "2",
        "ARAGORA_HEARTBEAT_INTERVAL": "0.5",
        "ARAGORA_RETRY_BACKOFF_BASE_S": "0.05",
    }
    server = procs.server(env=fast)
    cap = unique("kill")
    first = procs.agent(server, capabilities=[cap], env={**fast, "SCRIPTED_BLOCK": "1"})
    with server.client(server.role_token("submitter")) as cp:
        task_id = cp.submit_task("block", {"label": "k"}, [cap])
        assert first.expect("STARTED").split()[1] == task_id
        first.stop(signal.SIGKILL)
        assert first.proc.returncode == -signal.SIGKILL
        second = procs.agent(server, capabilities=[cap], env=fast)

        task = cp.wait_for_task(task_id, WAIT_S)
        completed = cp.list_tasks(TaskStatus.COMPLETED, task_type="block", limit=1000)

    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"done_by": second.agent_id}
    assert task.attempt == 2
    assert [e.agent_id for e in task.errors] == [first.agent_id]
    assert [t.id for t in completed.tasks].count(task_id) == 1
    assert second.stop() == 0
    assert [line for line in second.rest() if line.startswith("RAN")] == [f"RAN {task_id} k"]


def test_two_servers_share_one_redis(procs: Processes) -> None:
    env = {"ARAGORA_KEY_PREFIX": procs.redis_prefix()}
    first = procs.server(store=procs.redis_url, env=env, wait=False)
    second = procs.server(store=procs.redis_url, env=env, wait=False)
    first.wait_ready()
    second.wait_ready()
    cap = unique("dual")
    submitter = first.role_token("submitter")  # issued through the first, valid on both

    with first.client(submitter) as cp:
        task_id = cp.submit_task("echo", {"label": "r"}, [cap])
    waiter = subprocess.Popen(
        [*CLI, "--url", second.url, "--token", submitter, "--json",
         "task", "wait", task_id, "--timeout", str(WAIT_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    procs.agent(first, capabilities=[cap])
    stdout, stderr = waiter.communicate(timeout=WAIT_S + 15)

    assert waiter.returncode == 0, stderr
    task = json.loads(stdout)
    assert task["id"] == task_id
    assert task["result"]["echo"] == {"label": "r"}
    with second.client(submitter) as cp:
        assert cp.get_task(task_id).status is TaskStatus.COMPLETED


def test_cli_says_in_one_line_when_the_server_is_unreachable() -> None:
    done = run_cli("--url", f"http://127.0.0.1:{free_port()}", "task", "get", "abc")

    assert done.returncode == 5
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: cannot reach the control plane")


def test_cli_says_in_one_line_when_the_token_is_wrong(shared_server: ServerProc) -> None:
    done = run_cli("agents", "list", "--url", shared_server.url, "--token", "not-the-token")

    assert done.returncode == 4
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: authentication failed (401)")
    assert "Traceback" not in done.stderr


def test_agent_with_a_wrong_token_exits_4_in_one_line(shared_server: ServerProc) -> None:
    agent = f"{SCRIPTED_AGENT}:agent"
    done = run_cli(
        "agent", "run", agent, "--url", shared_server.url, "--token", "not-the-token",
        "--log-level", "error",
    )  # fmt: skip

    assert done.returncode == 4
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: authentication failed (401)")


def test_cli_exit_codes_for_not_found_and_conflict(shared_server: ServerProc) -> None:
    operator = shared_server.role_token("operator")
    missing = run_cli("task", "get", "no-such-task", server=shared_server, token=operator)
    assert (missing.returncode, missing.stderr) == (3, "error: task 'no-such-task' not found\n")

    with shared_server.client(operator) as cp:
        task_id = cp.submit_task("echo", {}, [unique("nobody")])
    cancelled = run_cli("task", "cancel", task_id, "--json", server=shared_server, token=operator)
    assert cancelled.returncode == 0
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    retried = run_cli("task", "retry", task_id, server=shared_server, token=operator)
    assert retried.returncode == 7
    assert retried.stderr.count("\n") == 1


def test_sigterm_drains_the_in_flight_task_then_deregisters(
    shared_procs: Processes, shared_server: ServerProc
) -> None:
    cap = unique("drain")
    agent = shared_procs.agent(shared_server, capabilities=[cap])
    with shared_server.client(shared_server.role_token("submitter")) as cp:
        task_id = cp.submit_task("slow", {"label": "d", "seconds": 1.0}, [cap])
        assert agent.expect("STARTED").split()[1] == task_id
        assert agent.stop(signal.SIGTERM) == 0

        task = cp.get_task(task_id)
        assert task.status is TaskStatus.COMPLETED
        assert task.attempt == 1
        assert task.result == {"done_by": agent.agent_id, "slept_s": 1.0}
        with pytest.raises(AgentNotFoundError):
            cp.get_agent(agent.agent_id)
    log = agent.log()
    assert (
        log.index("agent_draining") < log.index("task_completed") < log.index("agent_deregistered")
    )


def test_client_maps_errors_of_a_live_server(shared_server: ServerProc) -> None:
    with ControlPlaneClient(shared_server.url, shared_server.token) as cp:
        with pytest.raises(AgentNotFoundError):
            cp.heartbeat(unique("ghost"))
        assert cp.is_ready() and cp.is_live()
        assert cp.health().status == "pass"


def test_example_agent_started_before_the_server_registers_once_it_is_up(
    procs: Processes,
) -> None:
    port = free_port()
    agent = procs.agent(
        f"http://127.0.0.1:{port}", agent_id="echo-1", target=str(EXAMPLES / "echo_agent.py")
    )
    server = procs.server(port=port)

    done = run_cli(
        "--json", "task", "submit", "echo", "--payload", '{"hello": "world"}', "-c", "echo",
        "--wait", "--timeout-wait", str(WAIT_S), server=server,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr + agent.log()
    task = json.loads(done.stdout)
    assert task["agent_id"] == "echo-1"
    assert task["result"] == {"echo": {"hello": "world"}, "task_id": task["id"], "attempt": 1}
    assert "register_retry" in agent.log()
