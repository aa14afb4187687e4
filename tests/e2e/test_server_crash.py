"""Three servers on one Redis; one is killed with SIGKILL while its agent holds tasks:
the others carry on, the dead server's agent's tasks are reaped and finished by the
agents of the surviving servers, and every task completes exactly once."""

from __future__ import annotations

import pytest

from aragora.control_plane import TaskStatus
from tests.e2e.conftest import Processes, unique

FAST = {
    "ARAGORA_HEARTBEAT_INTERVAL": "0.5",
    "ARAGORA_HEARTBEAT_TIMEOUT": "2",
    "ARAGORA_RETRY_BACKOFF_BASE_S": "0.1",
    "ARAGORA_RETRY_BACKOFF_MAX_S": "0.5",
}
WAIT_S = 60.0


@pytest.mark.timeout(150)
def test_a_server_killed_mid_load_loses_no_task(procs: Processes) -> None:
    env = {"ARAGORA_KEY_PREFIX": procs.redis_prefix(), **FAST}
    servers = [procs.server(store=procs.redis_url, env=env, wait=False) for _ in range(3)]
    for server in servers:
        server.wait_ready()
    doomed = servers[2]
    cap = unique("crash")
    submitter = servers[0].role_token("submitter")
    agent_env = {"ARAGORA_HEARTBEAT_INTERVAL": "0.5"}
    doomed_agent = procs.agent(doomed, capabilities=[cap], concurrency=4, env=agent_env)

    ids: list[str] = []
    with servers[0].client(submitter) as first, doomed.client(submitter) as third:
        for i in range(40):
            client = third if i % 2 else first
            ids.append(client.submit_task("slow", {"label": str(i), "seconds": 0.2}, [cap]))
        doomed_agent.expect("STARTED")  # the doomed server's agent holds tasks now
        doomed.proc.kill()
        doomed.proc.wait(timeout=10)
        for server in servers[:2]:
            procs.agent(server, capabilities=[cap], concurrency=4, env=agent_env)
        ids += [first.submit_task("echo", {"label": f"after-{i}"}, [cap]) for i in range(20)]

    with servers[1].client(submitter) as survivor:
        finished = [survivor.wait_for_task(task_id, WAIT_S) for task_id in ids]
    assert [t.status for t in finished] == [TaskStatus.COMPLETED] * len(ids)
    assert len({t.id for t in finished}) == len(ids)
    reaped = [t for t in finished if t.errors]
    assert reaped, "the doomed server's agent held tasks that had to be reaped"
    assert all(e.error == "agent offline" for t in reaped for e in t.errors)
