"""The dashboard's page, the caller's identity (``/whoami``) and the JSON snapshot of
``/events``, through the app."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from aragora.server.dashboard.static_files import CONTENT_SECURITY_POLICY, STATIC_DIR
from aragora.tenancy.models import ROLE_ACTIONS, Role
from tests.server.conftest import (
    API,
    ClientFactory,
    assert_problem,
    create_workspace,
    http_client,
    issue,
    register,
    submit,
)

SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)


@SQLITE_ONLY
async def test_the_page_and_its_modules_load_without_a_token_with_a_strict_policy(
    app: FastAPI,
) -> None:
    async with http_client(app, token=None) as anonymous:
        page = await anonymous.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        # No inline script: every script is a module file of the page's origin.
        assert "<script>" not in page.text
        assert '<script type="module" src="ui/app.js"></script>' in page.text
        for name in sorted(p.name for p in STATIC_DIR.iterdir() if p.suffix in (".js", ".css")):
            asset = await anonymous.get(f"/ui/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["x-content-type-options"] == "nosniff"
            expected = "text/javascript" if name.endswith(".js") else "text/css"
            assert asset.headers["content-type"].startswith(expected), name
        assert (await anonymous.get("/ui/no-such-file.js")).status_code == 404
        # Nothing outside the static directory, however the path is spelled.
        for path in ("/ui/../__init__.py", "/ui/%2e%2e/__init__.py", "/ui/..%2f__init__.py"):
            escaped = await anonymous.get(path)
            assert escaped.status_code in (401, 404), path
            assert "import" not in escaped.text, path


@SQLITE_ONLY
async def test_the_api_still_needs_a_token_and_wins_over_the_page(app: FastAPI) -> None:
    async with http_client(app, token=None) as anonymous:
        assert_problem(await anonymous.get(f"{API}/tasks"), 401, "unauthorized")
        assert_problem(await anonymous.get(f"{API}/events"), 401, "unauthorized")
        assert_problem(await anonymous.post("/", json={}), 401, "unauthorized")
        assert (await anonymous.get("/livez")).status_code == 200
        assert (await anonymous.get("/openapi.json")).status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize("role", list(Role))
async def test_whoami_names_the_workspace_role_and_granted_actions(
    client: httpx.AsyncClient, client_for: ClientFactory, role: Role
) -> None:
    await create_workspace(client, "ws-who")
    caller = await client_for(await issue(client, role.value, "ws-who"))
    response = await caller.get(f"{API}/whoami")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workspace"] == "ws-who"
    assert body["role"] == role.value
    assert set(body["actions"]) == {a.value for a in ROLE_ACTIONS[role]}
    assert ("task.cancel" in body["actions"]) == (
        role in (Role.ADMIN, Role.OPERATOR, Role.SUBMITTER)
    )


async def test_the_snapshot_shows_the_callers_workspace_only(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "ws-a")
    await create_workspace(client, "ws-b")
    a = await client_for(await issue(client, "viewer", "ws-a"))
    b = await client_for(await issue(client, "admin", "ws-b"))
    a_admin = await client_for(await issue(client, "admin", "ws-a"))
    await register(b, "agent-of-b", ["b-secret-capability"])
    b_task = await submit(b, "b-secret-type", payload={"secret": "b-marker"})
    await register(a_admin, "agent-of-a", ["debate"])
    a_task = await submit(a_admin, "a-type", priority="high")

    response = await a.get(f"{API}/events")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"overview", "agents", "tasks"}
    assert [t["id"] for t in body["tasks"]["tasks"]] == [a_task]
    assert [x["agent_id"] for x in body["agents"]["agents"]] == ["agent-of-a"]
    assert body["overview"]["counts"]["pending"] == 1
    assert body["overview"]["queues"]["high"]["depth"] == 1
    for marker in (b_task, "b-secret-type", "b-marker", "agent-of-b", "b-secret-capability"):
        assert marker not in response.text


async def test_a_section_the_workspace_rules_forbid_is_left_out(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await register(client, "agent-1")
    rule = 'forbid(principal, action == Action::"agent.read", resource);'
    assert (await client.put(f"{API}/policies/no-agents", json={"text": rule})).status_code == 200
    viewer = await client_for(await issue(client, "viewer"))
    body = (await viewer.get(f"{API}/events")).json()
    assert set(body) == {"overview", "tasks"}
    assert "agent-1" not in str(body["overview"])
