"""Batch routes: claim, complete and fail several tasks per request, each item fenced and
scoped on its own, with the single routes' authorization and tenant isolation."""

from __future__ import annotations

from typing import Any

import httpx

from tests.server.conftest import (
    API,
    ClientFactory,
    assert_problem,
    create_workspace,
    issue,
    register,
    submit,
)


async def _claim_batch(
    client: httpx.AsyncClient, max_tasks: int, agent_id: str = "agent-1"
) -> list[dict[str, Any]]:
    response = await client.post(
        f"{API}/tasks/claim-batch", json={"agent_id": agent_id, "max_tasks": max_tasks}
    )
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


async def _status(client: httpx.AsyncClient, task_id: str) -> str:
    response = await client.get(f"{API}/tasks/{task_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def test_claim_batch_leases_the_best_tasks_up_to_the_free_slots(
    client: httpx.AsyncClient,
) -> None:
    await register(client, max_concurrent_tasks=3)
    ids = [await submit(client, payload={"i": i}) for i in range(5)]
    tasks = await _claim_batch(client, 10)
    assert [t["id"] for t in tasks] == ids[:3]
    assert all(t["lease_token"] and t["status"] == "running" for t in tasks)
    assert await _claim_batch(client, 10) == []


async def test_complete_batch_answers_each_item_in_its_place(client: httpx.AsyncClient) -> None:
    await register(client, max_concurrent_tasks=3)
    ids = [await submit(client, payload={"i": i}) for i in range(3)]
    leases = {t["id"]: t["lease_token"] for t in await _claim_batch(client, 3)}
    items = [
        {"task_id": ids[0], "lease_token": leases[ids[0]], "result": {"ok": 0}, "cost": 0.25},
        {"task_id": ids[1], "lease_token": "stale-lease", "result": {"ok": 1}},
        {"task_id": "no-such-task", "lease_token": "x", "result": 1},
        {"task_id": ids[2], "lease_token": leases[ids[2]], "result": {"ok": 2}},
    ]
    response = await client.post(f"{API}/tasks/complete-batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 409, 404, 200]
    assert results[0]["task"]["result"] == {"ok": 0} and results[0]["task"]["cost"] == 0.25
    assert results[1]["problem"]["type"].endswith("lease-lost")
    assert results[2]["problem"]["type"].endswith("task-not-found")
    assert [await _status(client, i) for i in ids] == ["completed", "running", "completed"]


async def test_a_malformed_item_refuses_the_whole_batch_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await register(client, max_concurrent_tasks=2)
    ids = [await submit(client) for _ in range(2)]
    leases = {t["id"]: t["lease_token"] for t in await _claim_batch(client, 2)}
    items = [
        {"task_id": ids[0], "lease_token": leases[ids[0]], "result": 1},
        {"task_id": ids[1], "result": 1},
    ]
    response = await client.post(f"{API}/tasks/complete-batch", json={"items": items})
    assert_problem(response, 422, "validation-error", "items[1].lease_token")
    huge_cost = [{"task_id": ids[0], "lease_token": leases[ids[0]], "result": 1, "cost": 1e308}]
    response = await client.post(f"{API}/tasks/complete-batch", json={"items": huge_cost})
    assert_problem(response, 422, "validation-error", "items[0].cost")
    response = await client.post(f"{API}/tasks/complete-batch", json={"items": []})
    assert_problem(response, 422, "validation-error", "items")
    response = await client.post(
        f"{API}/tasks/claim-batch", json={"agent_id": "agent-1", "max_tasks": 101}
    )
    assert_problem(response, 422, "validation-error", "max_tasks")
    assert [await _status(client, i) for i in ids] == ["running", "running"]


async def test_fail_batch_retries_or_fails_each_item(client: httpx.AsyncClient) -> None:
    await register(client, max_concurrent_tasks=2)
    ids = [await submit(client) for _ in range(2)]
    leases = {t["id"]: t["lease_token"] for t in await _claim_batch(client, 2)}
    items = [
        {"task_id": ids[0], "lease_token": leases[ids[0]], "error": "flaky"},
        {"task_id": ids[1], "lease_token": leases[ids[1]], "error": "bad", "retryable": False},
        {"task_id": ids[1], "lease_token": leases[ids[1]], "error": "again"},
    ]
    response = await client.post(f"{API}/tasks/fail-batch", json={"items": items})
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == [200, 200, 409]
    assert [await _status(client, i) for i in ids] == ["pending", "failed"]


async def test_another_workspace_can_neither_claim_nor_finish_the_tasks_of_b(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "ws-a")
    await create_workspace(client, "ws-b")
    a = await client_for(await issue(client, "admin", "ws-a"))
    b = await client_for(await issue(client, "admin", "ws-b"))
    await register(b, "agent-b", max_concurrent_tasks=2)
    running = await submit(b)
    [leased] = await _claim_batch(b, 1, "agent-b")
    pending = await submit(b)

    response = await a.post(
        f"{API}/tasks/claim-batch", json={"agent_id": "agent-b", "max_tasks": 5}
    )
    assert_problem(response, 404, "agent-not-found")
    for route, item in (
        ("complete-batch", {"result": "from a"}),
        ("fail-batch", {"error": "from a", "retryable": False}),
    ):
        body = {"items": [{"task_id": running, "lease_token": leased["lease_token"], **item}]}
        response = await a.post(f"{API}/tasks/{route}", json=body)
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        assert result["status"] == 404 and "task" not in result
    assert await _status(b, running) == "running"
    assert await _status(b, pending) == "pending"


async def test_an_agent_token_claims_only_for_its_own_agents(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    owner = await client_for(await issue(client, "agent"))
    stranger = await client_for(await issue(client, "agent"))
    await register(owner, "agent-own")
    task_id = await submit(client)
    response = await stranger.post(
        f"{API}/tasks/claim-batch", json={"agent_id": "agent-own", "max_tasks": 1}
    )
    assert_problem(response, 403, "forbidden")
    assert await _status(client, task_id) == "pending"
    assert [t["id"] for t in await _claim_batch(owner, 1, "agent-own")] == [task_id]


async def test_a_viewer_may_not_use_the_batch_routes(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    viewer = await client_for(await issue(client, "viewer"))
    await register(client)
    task_id = await submit(client)
    bodies = {
        "claim-batch": {"agent_id": "agent-1", "max_tasks": 1},
        "complete-batch": {"items": [{"task_id": task_id, "lease_token": "x", "result": 1}]},
        "fail-batch": {"items": [{"task_id": task_id, "lease_token": "x", "error": "e"}]},
    }
    for route, body in bodies.items():
        assert_problem(await viewer.post(f"{API}/tasks/{route}", json=body), 403, "forbidden")
    assert await _status(client, task_id) == "pending"
