"""Every route's happy path, on both stores, with bodies checked against the documented models."""

from __future__ import annotations

import httpx

from aragora.server.schemas import (
    AgentListOut,
    AgentOut,
    HeartbeatOut,
    SubmitTaskOut,
    TaskListOut,
    TaskOut,
)
from tests.server.conftest import API, claim, register, submit


async def test_register_answers_201_with_the_agent(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/agents/register",
        json={
            "agent_id": "agent-1",
            "capabilities": ["search", "debate", "debate"],
            "model": "m-1",
            "max_concurrent_tasks": 2,
            "metadata": {"zone": "eu"},
        },
    )
    assert response.status_code == 201
    agent = AgentOut.model_validate(response.json())
    assert agent.agent_id == "agent-1"
    assert agent.workspace_id == "default"
    assert agent.capabilities == ["debate", "search"]
    assert (agent.status, agent.max_concurrent_tasks) == ("idle", 2)
    assert agent.metadata == {"zone": "eu"}


async def test_list_agents_filters_by_capability_and_status(client: httpx.AsyncClient) -> None:
    await register(client, "agent-1", ["debate"])
    await register(client, "agent-2", ["code"])
    await client.post(f"{API}/agents/agent-2/heartbeat", json={"status": "draining"})

    everyone = AgentListOut.model_validate((await client.get(f"{API}/agents")).json())
    assert sorted(a.agent_id for a in everyone.agents) == ["agent-1", "agent-2"]
    coders = (await client.get(f"{API}/agents", params={"capability": "code"})).json()
    assert [a["agent_id"] for a in coders["agents"]] == ["agent-2"]
    draining = (await client.get(f"{API}/agents", params={"status": "draining"})).json()
    assert [a["agent_id"] for a in draining["agents"]] == ["agent-2"]


async def test_get_agent(client: httpx.AsyncClient) -> None:
    await register(client, "agent-1")
    response = await client.get(f"{API}/agents/agent-1")
    assert response.status_code == 200
    assert AgentOut.model_validate(response.json()).agent_id == "agent-1"


async def test_heartbeat_sets_draining_and_reports_cancelled_tasks(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "agent-1")
    task_id = await submit(client)
    await claim(client, "agent-1")
    assert (await client.post(f"{API}/tasks/{task_id}/cancel")).status_code == 200

    response = await client.post(f"{API}/agents/agent-1/heartbeat", json={"status": "draining"})
    assert response.status_code == 200
    beat = HeartbeatOut.model_validate(response.json())
    assert beat.agent.status == "draining"
    assert beat.cancelled_task_ids == [task_id]

    again = await client.post(f"{API}/agents/agent-1/heartbeat")
    assert again.status_code == 200
    assert again.json()["cancelled_task_ids"] == []
    assert again.json()["agent"]["status"] == "draining"


async def test_deregister_answers_204_and_the_agent_is_gone(client: httpx.AsyncClient) -> None:
    await register(client, "agent-1")
    response = await client.delete(f"{API}/agents/agent-1")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"{API}/agents/agent-1")).status_code == 404


async def test_submit_answers_201_with_id_status_and_location(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/tasks/submit",
        json={
            "task_type": "debate",
            "payload": {"topic": "x"},
            "required_capabilities": ["debate"],
            "priority": "HIGH",
            "timeout_s": 12.5,
            "max_retries": 1,
            "metadata": {"origin": "test"},
        },
    )
    assert response.status_code == 201
    body = SubmitTaskOut.model_validate(response.json())
    assert body.status == "pending"
    assert response.headers["location"] == f"{API}/tasks/{body.task_id}"

    task = TaskOut.model_validate((await client.get(response.headers["location"])).json())
    assert (task.priority, task.timeout_s, task.max_retries) == ("high", 12.5, 1)
    assert task.required_capabilities == ["debate"]
    assert task.payload == {"topic": "x"}
    # The request's correlation id travels with the task, for the agent's logs.
    correlation_id = response.headers["x-request-id"]
    assert task.metadata == {"origin": "test", "correlation_id": correlation_id}


async def test_repeated_idempotency_key_answers_201_with_the_first_task(
    client: httpx.AsyncClient,
) -> None:
    first = await submit(client, idempotency_key="k-1", payload=1)
    await register(client)
    await claim(client)
    response = await client.post(
        f"{API}/tasks/submit",
        json={"task_type": "debate", "payload": 2, "idempotency_key": "k-1"},
    )
    assert response.status_code == 201
    assert response.json() == {"task_id": first, "status": "running"}


async def test_get_task_never_shows_the_lease_token(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client)
    claimed = await claim(client)
    assert claimed["lease_token"]

    task = TaskOut.model_validate((await client.get(f"{API}/tasks/{task_id}")).json())
    assert task.status == "running"
    assert task.agent_id == "agent-1"
    assert task.lease_token is None


async def test_claim_returns_the_task_with_its_lease_token(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client)
    task = TaskOut.model_validate(await claim(client))
    assert (task.id, task.status, task.attempt) == (task_id, "running", 1)
    assert task.lease_token


async def test_claim_without_a_task_answers_204(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.post(f"{API}/tasks/claim", json={"agent_id": "agent-1"})
    assert response.status_code == 204
    assert response.content == b""


async def test_complete_records_result_and_cost(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client)
    token = (await claim(client))["lease_token"]
    response = await client.post(
        f"{API}/tasks/{task_id}/complete",
        json={"lease_token": token, "result": {"answer": 42}, "cost": 0.25},
    )
    assert response.status_code == 200
    task = TaskOut.model_validate(response.json())
    assert (task.status, task.result, task.cost) == ("completed", {"answer": 42}, 0.25)
    assert task.lease_token is None


async def test_fail_retryable_requeues_and_not_retryable_fails(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client, max_retries=3)
    token = (await claim(client))["lease_token"]
    response = await client.post(
        f"{API}/tasks/{task_id}/fail", json={"lease_token": token, "error": "flaky"}
    )
    assert response.status_code == 200
    task = TaskOut.model_validate(response.json())
    assert (task.status, task.error) == ("pending", "flaky")
    assert [e.error for e in task.errors] == ["flaky"]

    other = await submit(client)
    token = (await claim(client))["lease_token"]
    response = await client.post(
        f"{API}/tasks/{other}/fail",
        json={"lease_token": token, "error": "broken", "retryable": False},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "failed"


async def test_cancel_a_pending_task(client: httpx.AsyncClient) -> None:
    task_id = await submit(client)
    response = await client.post(f"{API}/tasks/{task_id}/cancel")
    assert response.status_code == 200
    assert TaskOut.model_validate(response.json()).status == "cancelled"


async def test_retry_sends_a_failed_task_back_to_the_queue(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client, max_retries=0)
    token = (await claim(client))["lease_token"]
    failed = await client.post(
        f"{API}/tasks/{task_id}/fail", json={"lease_token": token, "error": "boom"}
    )
    assert failed.json()["status"] == "failed"

    response = await client.post(f"{API}/tasks/{task_id}/retry")
    assert response.status_code == 200
    task = TaskOut.model_validate(response.json())
    assert task.status == "pending"
    assert [e.error for e in task.errors] == ["boom"]
    assert (await claim(client))["id"] == task_id


async def test_list_tasks_filters_and_pages(client: httpx.AsyncClient) -> None:
    ids = [await submit(client, "debate") for _ in range(3)]
    code_id = await submit(client, "code")
    await client.post(f"{API}/tasks/{ids[0]}/cancel")

    everything = TaskListOut.model_validate((await client.get(f"{API}/tasks")).json())
    assert [t.id for t in everything.tasks] == [code_id, *reversed(ids)]
    assert everything.next_cursor is None
    assert all(t.lease_token is None for t in everything.tasks)

    debates = (await client.get(f"{API}/tasks", params={"task_type": "debate"})).json()
    assert [t["id"] for t in debates["tasks"]] == list(reversed(ids))
    cancelled = (await client.get(f"{API}/tasks", params={"status": "cancelled"})).json()
    assert [t["id"] for t in cancelled["tasks"]] == [ids[0]]

    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 3}
    while True:
        page = (await client.get(f"{API}/tasks", params=params)).json()
        seen += [t["id"] for t in page["tasks"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 3, "cursor": page["next_cursor"]}
    assert seen == [code_id, *reversed(ids)]


async def test_priority_order_over_http(client: httpx.AsyncClient) -> None:
    await register(client, capabilities=["debate"], max_concurrent_tasks=4)
    by_priority = {}
    for priority in ("low", "normal", "critical", "high"):
        by_priority[priority] = await submit(client, priority=priority)
    claimed = [(await claim(client))["id"] for _ in range(4)]
    assert claimed == [by_priority[p] for p in ("critical", "high", "normal", "low")]


async def test_docs_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in (
        f"{API}/agents/register",
        f"{API}/agents",
        f"{API}/tasks/submit",
        f"{API}/tasks/{{task_id}}",
        f"{API}/health",
    ):
        assert path in paths
    not_found = paths[f"{API}/tasks/{{task_id}}"]["get"]["responses"]["404"]
    assert list(not_found["content"]) == ["application/problem+json"]
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    for path in (f"{API}/tasks", f"{API}/workspaces", f"{API}/audit/verify"):
        assert document["paths"][path]["get"]["security"]
    assert "security" not in document["paths"]["/livez"]["get"]
