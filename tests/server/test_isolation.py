"""Tenant isolation over the whole route table: a token of workspace A, aimed at the
objects of workspace B on every route the app serves, never sees or changes them.

The routes come from ``app.routes``: a route added without workspace scoping, or with
a path parameter these tests do not know, fails here.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI

from tests.server.conftest import (
    API,
    ClientFactory,
    claim,
    create_workspace,
    issue,
    register,
    submit,
)
from tests.server.routing import call, guarded_routes

MARKERS = ("b-payload-marker", "b-model-marker", "b-rule-marker", "b-flag-marker")
"""Strings only B's objects hold: none may reach A."""


async def _world_of_b(b: httpx.AsyncClient) -> dict[str, Any]:
    await register(b, "agent-b", ["debate"], model="b-model-marker")
    pending = await submit(b, payload={"secret": "b-payload-marker"}, required_capabilities=["x"])
    running = await submit(b, payload={"secret": "b-payload-marker"})
    lease = (await claim(b, "agent-b"))["lease_token"]
    token = (await b.post(f"{API}/tokens", json={"role": "viewer"})).json()
    rule = 'forbid(principal, action == Action::"task.retry", resource);'
    assert (
        await b.put(f"{API}/policies/rule-b", json={"text": rule, "description": "b-rule-marker"})
    ).status_code == 200
    flag = {"variants": {"on": True}, "default_variant": "on", "description": "b-flag-marker"}
    assert (await b.put(f"{API}/flags/flag-b", json=flag)).status_code == 200
    return {
        "pending": pending,
        "running": running,
        "lease": lease,
        "token_id": token["token_id"],
    }


async def _snapshot_of_b(b: httpx.AsyncClient, world: dict[str, Any]) -> dict[str, Any]:
    """Everything about B that an A request could have changed."""
    paths = [
        f"/tasks/{world['pending']}",
        f"/tasks/{world['running']}",
        "/agents/agent-b",
        "/tokens",
        "/policies",
        "/flags",
        "/workspaces/ws-b",
        "/budget",
    ]
    out: dict[str, Any] = {}
    for path in paths:
        response = await b.get(API + path)
        assert response.status_code == 200, (path, response.text)
        out[path] = response.json()
    return out


def _leaks(response: httpx.Response) -> list[str]:
    text = response.text
    found = [marker for marker in MARKERS if marker in text]
    compact = json.dumps(response.json(), separators=(",", ":")) if text else ""
    for field in ('"workspace_id":"ws-b"', '"workspace":"ws-b"', '"name":"ws-b"'):
        if field in compact:
            found.append(field)
    return found


async def test_a_token_of_a_never_reaches_the_objects_of_b(
    app: FastAPI, client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "ws-a")
    await create_workspace(client, "ws-b")
    a = await client_for(await issue(client, "admin", "ws-a"))
    b = await client_for(await issue(client, "admin", "ws-b"))
    world = await _world_of_b(b)
    before = await _snapshot_of_b(b, world)

    params = {
        "task_id": world["running"],
        "agent_id": "agent-b",
        "token_id": world["token_id"],
        "rule_id": "rule-b",
        "key": "flag-b",
        "name": "ws-b",
    }
    harmless_rule = (
        'forbid(principal, action == Action::"task.retry", resource) '
        'when { context.task_type == "never" };'
    )
    b_item = {"task_id": world["running"], "lease_token": world["lease"]}
    bodies = {
        ("POST", f"{API}/agents/register"): {
            "agent_id": "agent-b",
            "capabilities": ["debate"],
            "model": "m",
        },
        ("POST", f"{API}/tasks/submit"): {"task_type": "t", "payload": 1},
        ("POST", f"{API}/tasks/claim"): {"agent_id": "agent-b"},
        ("POST", f"{API}/tasks/{{task_id}}/complete"): {"lease_token": world["lease"], "result": 1},
        ("POST", f"{API}/tasks/{{task_id}}/fail"): {"lease_token": world["lease"], "error": "e"},
        ("POST", f"{API}/tasks/claim-batch"): {"agent_id": "agent-b", "max_tasks": 5},
        ("POST", f"{API}/tasks/complete-batch"): {"items": [b_item | {"result": 1}]},
        ("POST", f"{API}/tasks/fail-batch"): {"items": [b_item | {"error": "e"}]},
        ("POST", f"{API}/workspaces"): {"name": "ws-b"},
        ("PATCH", f"{API}/workspaces/{{name}}"): {"quotas": {"max_agents": 0}, "budget": None},
        ("POST", f"{API}/tokens"): {"workspace": "ws-b", "role": "admin"},
        ("PUT", f"{API}/policies/{{rule_id}}"): {"text": harmless_rule},
        ("PUT", f"{API}/flags/{{key}}"): {"variants": {"on": False}, "default_variant": "on"},
    }
    queries = {("GET", f"{API}/tokens"): {"workspace": "ws-b"}}
    for route in guarded_routes(app):
        response = await call(a, route, params, bodies, queries.get(route))
        assert response.status_code < 500, (route, response.text)
        if response.status_code in (403, 404):
            continue
        assert response.status_code < 400, (route, response.status_code, response.text)
        assert not _leaks(response), (route, _leaks(response), response.text)

    assert await _snapshot_of_b(b, world) == before
    # A's own lists hold none of B's objects.
    tasks = (await a.get(f"{API}/tasks")).json()["tasks"]
    assert {t["workspace_id"] for t in tasks} <= {"ws-a"}
    assert not {world["pending"], world["running"]} & {t["id"] for t in tasks}
    agents = (await a.get(f"{API}/agents")).json()["agents"]
    assert {x["workspace_id"] for x in agents} <= {"ws-a"}
    tokens = (await a.get(f"{API}/tokens")).json()["tokens"]
    assert world["token_id"] not in {t["token_id"] for t in tokens}
    assert {t["workspace"] for t in tokens} == {"ws-a"}
    names = [w["name"] for w in (await a.get(f"{API}/workspaces")).json()["workspaces"]]
    assert names == ["ws-a"]
    # Nothing A did was written into B's audit trail.
    b_tokens = {t["token_id"] for t in (await b.get(f"{API}/tokens")).json()["tokens"]}
    events = (await b.get(f"{API}/audit", params={"limit": 1000})).json()["events"]
    assert events and {e["principal"] for e in events} <= b_tokens


async def test_other_workspaces_are_not_found_unless_the_caller_administers_default(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "ws-a")
    await create_workspace(client, "ws-b")
    for role in ("admin", "operator"):
        a = await client_for(await issue(client, role, "ws-a"))
        for path in ("/workspaces/ws-b", "/workspaces/default", "/workspaces/nope"):
            response = await a.get(API + path)
            assert response.status_code in (403, 404), (role, path, response.text)
    # The deployment's admin reaches every workspace and every token.
    assert (await client.get(f"{API}/workspaces/ws-b")).status_code == 200
    token = await client.post(f"{API}/tokens", json={"workspace": "ws-b", "role": "viewer"})
    assert token.status_code == 201
    listed = (await client.get(f"{API}/tokens", params={"workspace": "ws-b"})).json()
    assert [t["token_id"] for t in listed["tokens"]] == [token.json()["token_id"]]
    assert (await client.delete(f"{API}/tokens/{token.json()['token_id']}")).status_code == 204
