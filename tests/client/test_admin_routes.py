"""The administration routes through the async client, against the real app in-process:
workspaces, tokens, access rules, spend and the audit trail, and the errors of roles,
rules, quotas and rate limits."""

from __future__ import annotations

import io

import pytest

from aragora.audit import verify_export
from aragora.client import (
    AsyncControlPlaneClient,
    AuthenticationError,
    BudgetSettings,
    PermissionDeniedError,
    RateLimitedError,
)
from aragora.control_plane import ValidationError
from aragora.control_plane.models import BudgetPeriod
from aragora.policy import RuleNotFoundError
from aragora.tenancy import (
    Role,
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
    WorkspaceQuotas,
)
from tests.client.inprocess import InProcess

NO_EXECUTE = (
    'forbid(principal, action == Action::"task.submit", resource)\n'
    'when { context.task_type == "execute" };\n'
)


async def test_workspace_routes_round_trip(client: AsyncControlPlaneClient) -> None:
    created = await client.create_workspace(
        "team-a",
        plan="free",
        quotas={"max_agents": 2, "max_pending_tasks": None},
        budget=BudgetSettings(25.0, BudgetPeriod.DAILY, soft_ratio=0.5),
    )
    assert (created.name, created.plan) == ("team-a", "free")
    assert created.quotas.max_agents == 2 and created.quotas.max_pending_tasks is None
    assert created.quotas.max_running_tasks == 10  # the free plan's
    assert created.budget == BudgetSettings(25.0, BudgetPeriod.DAILY, 0.5)
    assert created.created_at is not None and created.raw["name"] == "team-a"

    with pytest.raises(WorkspaceExistsError) as exists:
        await client.create_workspace("team-a")
    assert exists.value.name == "team-a"

    assert {w.name for w in await client.list_workspaces()} == {"default", "team-a"}
    assert (await client.get_workspace("team-a")).quotas == created.quotas
    with pytest.raises(WorkspaceNotFoundError) as missing:
        await client.get_workspace("nope")
    assert missing.value.name == "nope"

    updated = await client.update_workspace(
        "team-a", plan="standard", quotas={"max_submits_per_minute": 7}
    )
    assert updated.plan == "standard"
    assert updated.quotas.max_agents == 2  # the override survives the plan change
    assert updated.quotas.max_submits_per_minute == 7
    assert updated.budget is not None
    cleared = await client.update_workspace("team-a", remove_budget=True)
    assert cleared.budget is None
    with pytest.raises(ValidationError):
        await client.update_workspace("team-a", budget=BudgetSettings(1), remove_budget=True)
    with pytest.raises(ValidationError) as bad_quota:
        await client.update_workspace("team-a", quotas={"max_agents": -1})
    assert bad_quota.value.field.startswith("quotas")
    default = await client.get_workspace("default")
    assert default.quotas == WorkspaceQuotas()


async def test_token_routes_and_revocation(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    await client.create_workspace("team-b")
    info, secret = await client.create_token(Role.SUBMITTER, workspace="team-b", expires_in_s=600)
    assert (info.workspace_id, info.role, info.revoked_at) == ("team-b", Role.SUBMITTER, None)
    assert info.expires_at is not None and secret.startswith("acp_")

    listed = await client.list_tokens("team-b")
    assert [t.token_id for t in listed] == [info.token_id]
    assert listed[0].created_at > 0 and listed[0].created_by == "token:tok_bootstrap"
    assert listed[0].expires_at == info.expires_at

    async with server.client(secret) as submitter:
        task_id = await submitter.submit_task("echo", {})
        assert (await submitter.get_task(task_id)).workspace_id == "team-b"
        with pytest.raises(PermissionDeniedError) as denied:
            await submitter.list_tokens()
        assert denied.value.status == 403 and "token.manage" in denied.value.detail
        await client.revoke_token(info.token_id)
        await client.revoke_token(info.token_id)  # idempotent
        with pytest.raises(AuthenticationError) as refused:
            await submitter.get_task(task_id)
        assert refused.value.status == 401

    assert (await client.list_tokens("team-b"))[0].revoked_at is not None
    with pytest.raises(TokenNotFoundError) as unknown:
        await client.revoke_token("tok_unknown")
    assert unknown.value.token_id == "tok_unknown"
    with pytest.raises(WorkspaceNotFoundError):
        await client.create_token("viewer", workspace="absent")
    with pytest.raises(ValidationError) as bad_role:
        await client.create_token("root")
    assert bad_role.value.field == "role"


async def test_workspace_admins_see_only_their_own(server: InProcess) -> None:
    async with server.client() as admin:
        await admin.create_workspace("team-c")
        await admin.create_workspace("team-d")
    ws_admin = await server.token("admin", "team-c")
    async with server.client(ws_admin) as cp:
        assert [w.name for w in await cp.list_workspaces()] == ["team-c"]
        with pytest.raises(WorkspaceNotFoundError):
            await cp.get_workspace("team-d")
        with pytest.raises(PermissionDeniedError):
            await cp.create_workspace("team-e")
        _, viewer = await cp.create_token("viewer")
    async with server.client(viewer) as cp:
        assert (await cp.get_budget()).spent == 0


async def test_policy_routes_and_a_rule_that_forbids(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    assert (await client.list_policies()).rules == []
    rule = await client.put_policy("no-execute", NO_EXECUTE, description="no code runs")
    assert (rule.rule_id, rule.description, rule.text) == ("no-execute", "no code runs", NO_EXECUTE)
    assert rule.updated_at > 0
    policies = await client.list_policies()
    assert policies.version >= 1 and [r.rule_id for r in policies.rules] == ["no-execute"]

    async with server.client(await server.token("submitter")) as submitter:
        await submitter.submit_task("echo", {})
        with pytest.raises(PermissionDeniedError) as denied:
            await submitter.submit_task("execute", {})
        assert denied.value.rule_ids == ("no-execute",)

    with pytest.raises(ValidationError) as invalid:
        await client.put_policy("broken", "forbid(principal, action, resource) when { nope };")
    assert invalid.value.field
    await client.delete_policy("no-execute")
    with pytest.raises(RuleNotFoundError) as gone:
        await client.delete_policy("no-execute")
    assert gone.value.rule_id == "no-execute"


async def test_budget_report(client: AsyncControlPlaneClient) -> None:
    await client.update_workspace("default", budget=BudgetSettings(10.0, BudgetPeriod.MONTHLY))
    await client.submit_task("echo", {}, cost_estimate=2.5)
    report = await client.get_budget()
    assert (report.budget, report.reserved, report.spent) == (10.0, 2.5, 0.0)
    assert report.limits["budget"] == 10.0 and report.limits["budget_period"] == "monthly"
    assert report.period and report.raw["reserved"] == 2.5


async def test_submit_rate_limit_says_when_to_retry(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    await client.create_workspace("team-r", quotas={"max_submits_per_minute": 2})
    async with server.client(await server.token("submitter", "team-r")) as submitter:
        for _ in range(2):
            await submitter.submit_task("echo", {})
        with pytest.raises(RateLimitedError) as limited:
            await submitter.submit_task("echo", {})
    assert limited.value.status == 429
    assert 0 < limited.value.retry_after_s <= 60
    assert limited.value.problem["quota"] == "max_submits_per_minute"


async def test_audit_routes_page_verify_and_export(client: AsyncControlPlaneClient) -> None:
    task_ids = [await client.submit_task("echo", {"n": n}) for n in range(3)]
    info, _ = await client.create_token("viewer")

    first = await client.audit_page(limit=2)
    assert [e.seq for e in first.events] == [1, 2] and first.next_after_seq == 2
    rest = await client.audit_page(after_seq=2)
    assert [e.seq for e in rest.events] == [3, 4] and rest.next_after_seq is None
    events = first.events + rest.events
    assert [e.resource for e in events] == [
        *(f"task:{t}" for t in task_ids),
        f"token:{info.token_id}",
    ]
    assert {e.principal for e in events} == {"tok_bootstrap"}
    assert [e.action for e in events] == ["task.submit"] * 3 + ["token.manage"]

    verified = await client.audit_verify()
    assert (verified.ok, verified.checked, verified.first_broken_seq) == (True, 4, None)
    assert (verified.head_seq, verified.head_hash) == (4, events[-1].hash)

    out = io.StringIO()
    assert await client.export_audit(out, page_size=3) == 4
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    offline = verify_export("default", lines)
    assert (offline.ok, offline.checked, offline.head_hash) == (True, 4, verified.head_hash)
