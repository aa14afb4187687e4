"""Workspaces, tokens, flags and spend over HTTP; quotas and rate limits set through the
API hold on the next request."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from aragora.control_plane import ControlPlaneCoordinator
from aragora.control_plane.models import BudgetPeriod, WorkspaceLimits
from aragora.crypto import PayloadCipher
from aragora.server.admin_schemas import (
    FlagEvaluationOut,
    FlagListOut,
    IssuedTokenOut,
    SpendOut,
    TokenListOut,
    WorkspaceListOut,
    WorkspaceOut,
)
from aragora.tenancy.store import create_tenancy_store
from tests.conftest import Clock
from tests.server.conftest import (
    API,
    ClientFactory,
    assert_problem,
    create_workspace,
    http_client,
    issue,
    register,
    started_app,
    submit,
)

# -- workspaces -------------------------------------------------------------------------


async def test_create_get_and_list_workspaces(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    response = await client.post(
        f"{API}/workspaces",
        json={
            "name": "acme",
            "plan": "free",
            "quotas": {"max_agents": 7, "max_pending_tasks": None},
            "budget": {"limit": 50, "period": "daily", "soft_ratio": 0.5},
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{API}/workspaces/acme"
    created = WorkspaceOut.model_validate(response.json())
    assert (created.name, created.plan) == ("acme", "free")
    assert (created.quotas.max_agents, created.quotas.max_pending_tasks) == (7, None)
    assert created.quotas.max_running_tasks == 10  # the free plan's
    assert created.quota_overrides == {"max_agents": 7, "max_pending_tasks": None}
    assert created.budget is not None
    assert (created.budget.limit, created.budget.period) == (50.0, "daily")

    limits = await cp.get_workspace_limits("acme")
    assert (limits.max_agents, limits.max_pending_tasks, limits.max_running_tasks) == (7, None, 10)
    assert (limits.budget, limits.budget_period) == (50.0, BudgetPeriod.DAILY)

    fetched = await client.get(f"{API}/workspaces/acme")
    assert fetched.json() == response.json()
    listed = WorkspaceListOut.model_validate((await client.get(f"{API}/workspaces")).json())
    assert [w.name for w in listed.workspaces] == ["acme", "default"]
    assert_problem(await client.get(f"{API}/workspaces/nope"), 404, "workspace-not-found")
    again = await client.post(f"{API}/workspaces", json={"name": "acme"})
    assert_problem(again, 409, "conflict")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "plan": "gold"}, "plan"),
        ({"name": "ok", "quotas": {"max_gpus": 1}}, "quotas.max_gpus"),
        ({"name": "ok", "quotas": {"max_agents": -1}}, "quotas.max_agents"),
        ({"name": "ok", "budget": {"limit": 1, "period": "weekly"}}, "budget.period"),
        ({"name": "ok", "budget": {"limit": -1}}, "budget.limit"),
        ({"name": "ok", "budget": {"limit": 1, "soft_ratio": 0}}, "budget.soft_ratio"),
    ],
)
async def test_bad_workspaces_are_422(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    assert_problem(
        await client.post(f"{API}/workspaces", json=body), 422, "validation-error", field
    )
    names = [w["name"] for w in (await client.get(f"{API}/workspaces")).json()["workspaces"]]
    assert names == ["default"]


async def test_only_admins_of_default_create_workspaces(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "acme")
    acme_admin = await client_for(await issue(client, "admin", "acme"))
    response = await acme_admin.post(f"{API}/workspaces", json={"name": "other"})
    assert_problem(response, 403, "forbidden")
    operator = await client_for(await issue(client, "operator"))
    assert_problem(await operator.post(f"{API}/workspaces", json={"name": "o"}), 403, "forbidden")
    # A workspace's admin reads its own workspace only, sets its budget, but may not
    # grant itself another plan or larger quotas.
    own = await acme_admin.get(f"{API}/workspaces")
    assert [w["name"] for w in own.json()["workspaces"]] == ["acme"]
    upgrade = await acme_admin.patch(f"{API}/workspaces/acme", json={"plan": "unlimited"})
    assert_problem(upgrade, 403, "forbidden")
    quotas = {"quotas": {"max_agents": None}}
    assert_problem(await acme_admin.patch(f"{API}/workspaces/acme", json=quotas), 403, "forbidden")
    budget = await acme_admin.patch(f"{API}/workspaces/acme", json={"budget": {"limit": 5}})
    assert budget.status_code == 200, budget.text
    patched = await client.patch(f"{API}/workspaces/acme", json={"plan": "free"})
    assert patched.json()["plan"] == "free"


async def test_patched_quotas_hold_on_the_next_request(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    response = await client.patch(
        f"{API}/workspaces/default", json={"quotas": {"max_pending_tasks": 1, "max_agents": 1}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["quota_overrides"] == {"max_agents": 1, "max_pending_tasks": 1}
    await submit(client)
    refused = await client.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    problem = assert_problem(refused, 403, "quota-exceeded")
    assert (problem["quota"], problem["limit"], problem["current"]) == ("max_pending_tasks", 1, 1)
    await register(client, "a-1")
    second = await client.post(
        f"{API}/agents/register", json={"agent_id": "a-2", "capabilities": [], "model": "m"}
    )
    assert assert_problem(second, 403, "quota-exceeded")["quota"] == "max_agents"

    # null is unlimited; overrides merge; the budget is kept unless named.
    await client.patch(f"{API}/workspaces/default", json={"budget": {"limit": 5}})
    lifted = await client.patch(
        f"{API}/workspaces/default", json={"quotas": {"max_pending_tasks": None}}
    )
    assert lifted.json()["quota_overrides"] == {"max_agents": 1, "max_pending_tasks": None}
    assert lifted.json()["budget"] == {"limit": 5.0, "period": "monthly", "soft_ratio": 0.8}
    await submit(client)
    removed = await client.patch(f"{API}/workspaces/default", json={"budget": None})
    assert removed.json()["budget"] is None
    assert (await cp.get_workspace_limits("default")).budget is None


async def test_patched_budget_is_enforced_and_reported(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await client.patch(f"{API}/workspaces/default", json={"budget": {"limit": 1.0}})
    await submit(client, cost_estimate=0.75)
    response = await client.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": 1, "cost_estimate": 0.5}
    )
    assert_problem(response, 402, "budget-exceeded")
    viewer = await client_for(await issue(client, "viewer"))
    spend = SpendOut.model_validate((await viewer.get(f"{API}/budget")).json())
    assert (spend.budget, spend.reserved, spend.spent) == (1.0, 0.75, 0.0)
    assert spend.limits.budget == 1.0
    assert spend.limits.max_agents == 100
    for role in ("submitter", "agent"):
        other = await client_for(await issue(client, role))
        assert_problem(await other.get(f"{API}/budget"), 403, "forbidden")


async def test_startup_pushes_every_workspace_quota_to_the_store(
    cp: ControlPlaneCoordinator,
) -> None:
    """Quotas changed while no server ran (or before a restart) hold once one starts."""
    tenancy = create_tenancy_store(cp.store)
    await tenancy.create_workspace("offline", "free", {"max_agents": 3})
    await cp.set_workspace_limits("offline", WorkspaceLimits(budget=9.0))
    await started_app(cp)
    limits = await cp.get_workspace_limits("offline")
    assert (limits.max_agents, limits.max_running_tasks, limits.budget) == (3, 10, 9.0)
    assert (await cp.get_workspace_limits("default")).max_agents == 100


# -- rate limits -------------------------------------------------------------------------


async def test_submits_are_rate_limited_per_minute(
    client: httpx.AsyncClient, client_for: ClientFactory, clock: Clock
) -> None:
    patched = await client.patch(
        f"{API}/workspaces/default", json={"quotas": {"max_submits_per_minute": 2}}
    )
    assert patched.json()["quotas"]["max_submits_per_minute"] == 2
    other = await client_for(await issue(client, "submitter"))
    await submit(client)
    for _ in range(3):  # reads and other writes do not count
        assert (await client.get(f"{API}/tasks")).status_code == 200
        await register(client)
    await submit(client)

    refused = await other.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    problem = assert_problem(refused, 429, "rate-limited")
    assert (problem["quota"], problem["limit"], problem["scope"]) == (
        "max_submits_per_minute",
        2,
        "workspace",
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    own = await client.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    assert assert_problem(own, 429, "rate-limited")["scope"] == "token"
    assert len((await client.get(f"{API}/tasks")).json()["tasks"]) == 2

    clock.advance(int(refused.headers["retry-after"]))
    assert await submit(other)


async def test_a_submit_quota_of_zero_refuses_every_submit(client: httpx.AsyncClient) -> None:
    await client.patch(f"{API}/workspaces/default", json={"quotas": {"max_submits_per_minute": 0}})
    refused = await client.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    assert assert_problem(refused, 403, "quota-exceeded")["quota"] == "max_submits_per_minute"


# -- tokens ------------------------------------------------------------------------------


async def test_issue_list_and_revoke_tokens(
    client: httpx.AsyncClient, client_for: ClientFactory, clock: Clock
) -> None:
    response = await client.post(f"{API}/tokens", json={"role": "submitter", "expires_in_s": 60})
    assert response.status_code == 201, response.text
    issued = IssuedTokenOut.model_validate(response.json())
    assert issued.token.startswith("acp_") and issued.token_id.startswith("tok_")
    assert (issued.workspace, issued.role) == ("default", "submitter")
    assert issued.expires_at is not None

    listed = (await client.get(f"{API}/tokens")).json()
    TokenListOut.model_validate(listed)
    assert issued.token not in str(listed)
    by_id = {t["token_id"]: t for t in listed["tokens"]}
    assert set(by_id) == {"tok_bootstrap", issued.token_id}
    assert set(by_id[issued.token_id]) == {
        "token_id",
        "workspace",
        "role",
        "created_at",
        "expires_at",
        "revoked_at",
        "created_by",
    }
    assert by_id[issued.token_id]["created_by"] == "token:tok_bootstrap"

    assert (await client.delete(f"{API}/tokens/{issued.token_id}")).status_code == 204
    assert (await client.delete(f"{API}/tokens/{issued.token_id}")).status_code == 204
    revoked = (await client.get(f"{API}/tokens")).json()["tokens"]
    assert [t["revoked_at"] is not None for t in revoked] == [False, True]
    assert_problem(await client.delete(f"{API}/tokens/tok_nosuch"), 404, "token-not-found")
    unknown = await client.post(f"{API}/tokens", json={"role": "viewer", "workspace": "nope"})
    assert_problem(unknown, 404, "workspace-not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "root"}, "role"),
        ({}, "role"),
        ({"role": "viewer", "expires_in_s": 0}, "expires_in_s"),
        ({"role": "viewer", "workspace": "a b"}, "workspace"),
    ],
)
async def test_bad_token_requests_are_422(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    assert_problem(await client.post(f"{API}/tokens", json=body), 422, "validation-error", field)


async def test_only_admins_manage_tokens(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    operator = await client_for(await issue(client, "operator"))
    assert_problem(await operator.post(f"{API}/tokens", json={"role": "admin"}), 403, "forbidden")
    assert_problem(await operator.get(f"{API}/tokens"), 403, "forbidden")
    assert_problem(await operator.delete(f"{API}/tokens/tok_bootstrap"), 403, "forbidden")


# -- flags -------------------------------------------------------------------------------


async def test_flags_are_put_listed_evaluated_and_deleted(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    flag = {
        "variants": {"blue": "b", "green": "g"},
        "default_variant": "blue",
        "rollout": [["green", 30], ["blue", 70]],
        "description": "colour",
    }
    put = await client.put(f"{API}/flags/colour", json=flag)
    assert put.status_code == 200, put.text
    assert put.json()["kind"] == "string"
    listed = FlagListOut.model_validate((await client.get(f"{API}/flags")).json())
    assert [f.key for f in listed.flags] == ["colour"] and listed.version == 1

    viewer = await client_for(await issue(client, "viewer"))
    seen = set()
    for user in range(40):
        response = await viewer.get(
            f"{API}/flags/colour/evaluate", params={"targeting_key": f"user-{user}"}
        )
        result = FlagEvaluationOut.model_validate(response.json())
        assert (
            result.reason == "SPLIT"
            and result.value == {"blue": "b", "green": "g"}[result.variant or ""]
        )
        seen.add(result.variant)
    assert seen == {"blue", "green"}
    default = (await viewer.get(f"{API}/flags/colour/evaluate")).json()
    assert (default["variant"], default["reason"]) == ("blue", "DEFAULT")

    await client.put(f"{API}/flags/colour", json={**flag, "enabled": False})
    disabled = (await viewer.get(f"{API}/flags/colour/evaluate")).json()
    assert disabled == {"key": "colour", "value": None, "variant": None, "reason": "DISABLED"}
    assert (await client.delete(f"{API}/flags/colour")).status_code == 204
    assert_problem(await viewer.get(f"{API}/flags/colour/evaluate"), 404, "flag-not-found")
    assert_problem(await client.delete(f"{API}/flags/colour"), 404, "flag-not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"variants": {"on": True}, "default_variant": "off"}, "default_variant"),
        ({"variants": {"on": True, "n": 1}, "default_variant": "on"}, "variants"),
        ({"variants": {}, "default_variant": "on"}, "variants"),
        (
            {"variants": {"on": True}, "default_variant": "on", "rollout": [["on", 50]]},
            "rollout",
        ),
        (
            {"variants": {"on": True}, "default_variant": "on", "rollout": [["on", "100"]]},
            "rollout",
        ),
    ],
)
async def test_bad_flags_are_422(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.put(f"{API}/flags/f", json=body)
    problem = assert_problem(response, 422, "validation-error")
    assert problem["field"].startswith(field), problem
    assert (await client.get(f"{API}/flags")).json()["flags"] == []


# -- encryption ----------------------------------------------------------------------------


def _cipher(key_id: str, fill: int) -> PayloadCipher:
    key = base64.b64encode(bytes([fill]) * 32).decode()
    return PayloadCipher.from_spec(f"{key_id}:{key}")


async def test_data_the_server_cannot_decrypt_is_a_generic_500(
    cp: ControlPlaneCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    async with ControlPlaneCoordinator(
        cp.config, run_reaper=False, cipher=_cipher("k1", 1)
    ) as writer:
        task_id = await writer.submit_task("t", {"secret": 1})
    async with ControlPlaneCoordinator(
        cp.config, run_reaper=False, cipher=_cipher("k2", 2)
    ) as reader:
        app = await started_app(reader)
        async with http_client(app) as client:
            with caplog.at_level(logging.ERROR):
                response = await client.get(f"{API}/tasks/{task_id}")
    body = assert_problem(response, 500, "decryption-failed")
    assert "k1" not in body["detail"] and "k2" not in body["detail"]
    assert any("could not be decrypted" in r.getMessage() for r in caplog.records)
    assert base64.b64encode(bytes([2]) * 32).decode() not in caplog.text
