"""Authorization: one table for every route, each role's grants, workspace rules written
through the API, and agent tokens that act only as their own agents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aragora.server.authz import API_PREFIX, ROUTE_ACCESS, route_access
from aragora.server.middleware.tenancy import OPEN_PATHS
from aragora.tenancy.models import Action, Role, role_allows
from tests.server.conftest import (
    API,
    ClientFactory,
    assert_problem,
    issue,
    register,
    submit,
)
from tests.server.routing import call, guarded_routes, served_routes

PARAMS = {
    "task_id": "no-such-task",
    "agent_id": "no-such-agent",
    "token_id": "tok_nosuchtoken",
    "rule_id": "no-such-rule",
    "key": "no-such-flag",
    "name": "default",
}


def test_every_route_has_exactly_one_entry(app: FastAPI) -> None:
    """A route added without an entry in ROUTE_ACCESS fails here (and is refused at
    request time); an entry without a route is stale."""
    assert set(served_routes(app)) == set(ROUTE_ACCESS)
    open_paths = {path for (_, path), access in ROUTE_ACCESS.items() if access.is_open}
    assert open_paths == OPEN_PATHS
    assert all(path.startswith(API_PREFIX) or path == "/metrics" for _, path in guarded_routes(app))


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_reaches_exactly_the_routes_its_grant_allows(
    app: FastAPI, client: httpx.AsyncClient, client_for: ClientFactory, role: Role
) -> None:
    caller = await client_for(await issue(client, role.value))
    for route in guarded_routes(app):
        access = route_access(*route)
        assert access is not None and access.action is not None
        allowed = role_allows(role, access.action) and (
            access.roles is None or role in access.roles
        )
        response = await call(caller, route, PARAMS)
        if allowed:
            assert response.status_code != 403, (role, route, response.text)
        else:
            body = assert_problem(response, 403, "forbidden")
            assert f"role {role.value}" in body["detail"], (route, body)


async def test_a_viewer_cannot_cancel_or_submit(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    task_id = await submit(client)
    viewer = await client_for(await issue(client, "viewer"))
    assert (await viewer.get(f"{API}/tasks/{task_id}")).status_code == 200
    body = assert_problem(await viewer.post(f"{API}/tasks/{task_id}/cancel"), 403, "forbidden")
    assert body["reason"] == "role viewer lacks task.cancel"
    assert body["rule_ids"] == []
    response = await viewer.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    assert_problem(response, 403, "forbidden")
    assert (await client.get(f"{API}/tasks/{task_id}")).json()["status"] == "pending"


async def _put_rule(client: httpx.AsyncClient, rule_id: str, text: str) -> dict[str, Any]:
    response = await client.put(f"{API}/policies/{rule_id}", json={"text": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_route_asks_the_policy_engine(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A rule forbidding a route's action refuses the route, even to an admin, and
    names the rule; only managing the policies themselves stays open to admins."""
    await register(client, "agent-1", ["debate"])
    task_id = await submit(client)
    params = {**PARAMS, "task_id": task_id, "agent_id": "agent-1"}
    bodies = {
        ("POST", f"{API}/tasks/submit"): {"task_type": "t", "payload": 1},
        ("POST", f"{API}/agents/register"): {"agent_id": "a-2", "capabilities": [], "model": "m"},
        ("POST", f"{API}/tasks/claim"): {"agent_id": "agent-1"},
        ("POST", f"{API}/tasks/claim-batch"): {"agent_id": "agent-1", "max_tasks": 1},
    }
    for route in guarded_routes(app):
        access = route_access(*route)
        assert access is not None and access.action is not None
        text = f'forbid(principal, action == Action::"{access.action.value}", resource);'
        await _put_rule(client, "deny", text)
        response = await call(client, route, params, bodies)
        if access.action is Action.POLICY_MANAGE:
            assert response.status_code != 403, (route, response.text)
            continue
        body = assert_problem(response, 403, "forbidden")
        assert body["rule_ids"] == ["deny"], (route, body)
    assert (await client.delete(f"{API}/policies/deny")).status_code == 204
    task = (await client.get(f"{API}/tasks/{task_id}")).json()
    assert (task["status"], task["agent_id"]) == ("pending", None)


async def test_submitters_may_not_submit_critical_tasks(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await _put_rule(
        client,
        "no-critical-from-submitters",
        'forbid(principal in Role::"submitter", action == Action::"task.submit", resource)\n'
        'when { context.priority == "critical" };',
    )
    submitter = await client_for(await issue(client, "submitter"))
    body = {"task_type": "t", "payload": 1, "priority": "CRITICAL"}
    refused = await submitter.post(f"{API}/tasks/submit", json=body)
    problem = assert_problem(refused, 403, "forbidden")
    assert problem["rule_ids"] == ["no-critical-from-submitters"]
    assert "no-critical-from-submitters" in problem["detail"]
    assert await submit(submitter, priority="high")
    operator = await client_for(await issue(client, "operator"))
    assert await submit(operator, priority="critical")
    tasks = (await client.get(f"{API}/tasks")).json()["tasks"]
    assert sorted(t["priority"] for t in tasks) == ["critical", "high"]


async def test_only_agents_with_code_run_execute_tasks(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    """Routing by task type is a rule on submit.

    A task reaches only agents holding all its required capabilities, so forbidding any
    ``execute`` task that does not require ``code`` means only agents with the
    capability ``code`` may run tasks of type ``execute``::

        forbid(principal, action == Action::"task.submit", resource)
        when { context.task_type == "execute" && !context.required_capabilities.contains("code") };
    """
    await _put_rule(
        client,
        "execute-needs-code",
        'forbid(principal, action == Action::"task.submit", resource) '
        'when { context.task_type == "execute" '
        '&& !context.required_capabilities.contains("code") };',
    )
    operator = await client_for(await issue(client, "operator"))
    for required in ([], ["shell"]):
        response = await operator.post(
            f"{API}/tasks/submit",
            json={"task_type": "execute", "payload": 1, "required_capabilities": required},
        )
        assert assert_problem(response, 403, "forbidden")["rule_ids"] == ["execute-needs-code"]
    task_id = await submit(operator, "execute", required_capabilities=["code", "shell"])
    # Other task types are not concerned.
    assert await submit(operator, "debate", required_capabilities=["debate"])

    await register(client, "shell-only", ["shell"])
    await register(client, "coder", ["code", "shell"])
    nothing = await client.post(f"{API}/tasks/claim", json={"agent_id": "shell-only"})
    assert nothing.status_code == 204
    claimed = await client.post(f"{API}/tasks/claim", json={"agent_id": "coder"})
    assert claimed.json()["id"] == task_id


async def test_rules_see_agent_capabilities_on_register_and_claim(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await _put_rule(
        client,
        "no-gpu-agents",
        'forbid(principal in Role::"agent", action, resource) '
        'when { context.agent_capabilities.contains("gpu") };',
    )
    agent = await client_for(await issue(client, "agent"))
    refused = await agent.post(
        f"{API}/agents/register", json={"agent_id": "g", "capabilities": ["gpu"], "model": "m"}
    )
    assert assert_problem(refused, 403, "forbidden")["rule_ids"] == ["no-gpu-agents"]
    assert (await client.get(f"{API}/agents/g")).status_code == 404
    await register(agent, "cpu", ["cpu"])
    await submit(client, required_capabilities=["cpu"])
    assert (await agent.post(f"{API}/tasks/claim", json={"agent_id": "cpu"})).status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        "forbid(principal, action, resource",
        'forbid(principal, action == Action::"task.nuke", resource);',
        "forbid(principal, action, resource) when { context.colour == 1 };",
        "permit(principal == ?principal, action, resource);",
    ],
)
async def test_bad_cedar_is_422_naming_text_and_stores_nothing(
    client: httpx.AsyncClient, text: str
) -> None:
    response = await client.put(f"{API}/policies/r1", json={"text": text})
    assert_problem(response, 422, "validation-error", "text")
    assert (await client.get(f"{API}/policies")).json() == {"version": 0, "rules": []}


async def test_rules_are_listed_replaced_and_deleted(client: httpx.AsyncClient) -> None:
    text = 'forbid(principal, action == Action::"task.retry", resource);'
    first = await client.put(f"{API}/policies/r1", json={"text": text, "description": "d"})
    assert first.json()["version"] == 1
    assert (first.json()["rule_id"], first.json()["description"]) == ("r1", "d")
    listed = (await client.get(f"{API}/policies")).json()
    assert listed["version"] == 1
    assert [(r["rule_id"], r["text"]) for r in listed["rules"]] == [("r1", text)]
    assert (await client.delete(f"{API}/policies/r1")).status_code == 204
    assert_problem(await client.delete(f"{API}/policies/r1"), 404, "rule-not-found")
    assert (await client.get(f"{API}/policies")).json() == {"version": 2, "rules": []}


async def test_agent_tokens_act_only_as_the_agents_they_registered(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    first = await client_for(await issue(client, "agent"))
    second = await client_for(await issue(client, "agent"))
    await register(first, "worker")
    again = await second.post(
        f"{API}/agents/register", json={"agent_id": "worker", "capabilities": [], "model": "m"}
    )
    assert_problem(again, 403, "forbidden")
    for method, path, body in (
        ("POST", f"{API}/agents/worker/heartbeat", None),
        ("POST", f"{API}/tasks/claim", {"agent_id": "worker"}),
        ("DELETE", f"{API}/agents/worker", None),
    ):
        response = await second.request(method, path, json=body)
        assert_problem(response, 403, "forbidden")
    assert_problem(await second.post(f"{API}/agents/ghost/heartbeat"), 404, "agent-not-found")
    assert (await first.post(f"{API}/agents/worker/heartbeat")).status_code == 200
    operator = await client_for(await issue(client, "operator"))
    assert (await operator.post(f"{API}/agents/worker/heartbeat")).status_code == 200
    await register(client, "by-admin")
    refused = await first.post(f"{API}/agents/by-admin/heartbeat")
    assert_problem(refused, 403, "forbidden")

    assert (await first.delete(f"{API}/agents/worker")).status_code == 204
    await register(second, "worker")  # free again once deregistered
    assert (await second.post(f"{API}/agents/worker/heartbeat")).status_code == 200


async def test_a_revoked_agent_token_loses_its_agents_to_a_new_token(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    issued = (await client.post(f"{API}/tokens", json={"role": "agent"})).json()
    old = await client_for(issued["token"])
    await register(old, "worker")
    assert (await client.delete(f"{API}/tokens/{issued['token_id']}")).status_code == 204
    new = await client_for(await issue(client, "agent"))
    await register(new, "worker")
    assert (await new.post(f"{API}/agents/worker/heartbeat")).status_code == 200
