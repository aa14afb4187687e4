"""The audit trail of requests: one event per mutating or refused request, naming who
did what to which object with what outcome; verify finds a tampered event."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server.admin_schemas import AuditPageOut, AuditVerifyOut
from tests.audit import raw
from tests.server.conftest import (
    ADMIN_TOKEN,
    API,
    ClientFactory,
    assert_problem,
    claim,
    issue,
    register,
    submit,
)


async def _events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    page = AuditPageOut.model_validate(response.json())
    assert page.next_after_seq is None
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def test_requests_leave_events_naming_principal_action_resource_and_outcome(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    issued = (await client.post(f"{API}/tokens", json={"role": "viewer"})).json()
    viewer = await client_for(issued["token"])
    await register(client, "agent-1")
    task_id = await submit(client, payload={"secret": "payload-never-audited"})
    await claim(client)
    assert (await client.get(f"{API}/tasks/{task_id}")).status_code == 200  # not audited
    denied = await viewer.post(f"{API}/tasks/{task_id}/cancel", headers={"X-Request-ID": "r-1"})
    assert denied.status_code == 403
    missing = await client.post(f"{API}/tasks/nope/cancel")
    assert missing.status_code == 404

    events = await _events(client)
    summary = [(e["principal"], e["action"], e["resource"], e["outcome"]) for e in events]
    assert summary == [
        ("tok_bootstrap", "token.manage", f"token:{issued['token_id']}", "allowed"),
        ("tok_bootstrap", "agent.register", "agent:agent-1", "allowed"),
        ("tok_bootstrap", "task.submit", f"task:{task_id}", "allowed"),
        ("tok_bootstrap", "task.claim", "agent:agent-1", "allowed"),
        (issued["token_id"], "task.cancel", f"task:{task_id}", "denied"),
        ("tok_bootstrap", "task.cancel", "task:nope", "error"),
    ]
    assert [e["details"] for e in events] == [{"status": s} for s in (201, 201, 201, 200, 403, 404)]
    assert events[4]["correlation_id"] == "r-1"
    assert denied.headers["x-request-id"] == "r-1"
    assert all(e["client_address"] == "127.0.0.1" for e in events)
    text = str(events)
    for secret in (issued["token"], ADMIN_TOKEN, "payload-never-audited"):
        assert secret not in text

    verified = AuditVerifyOut.model_validate((await client.get(f"{API}/audit/verify")).json())
    assert (verified.ok, verified.checked, verified.first_broken_seq) == (True, 6, None)
    assert verified.head_seq == 6


async def test_a_refused_token_is_audited_anonymously_in_default(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    anonymous = await client_for("acp_not_a_real_token")
    assert (await anonymous.get(f"{API}/tasks")).status_code == 401
    other = await client.get(f"{API}/tasks", headers={"X-Workspace-ID": "acme"})
    assert other.status_code == 403
    events = await _events(client)
    assert [(e["principal"], e["action"], e["outcome"], e["details"]) for e in events] == [
        ("anonymous", "authenticate", "denied", {"status": 401}),
        ("tok_bootstrap", "authenticate", "denied", {"status": 403}),
    ]
    assert events[0]["resource"] == f"{API}/tasks"
    assert "acp_not_a_real_token" not in str(events)


async def test_rate_limited_submits_are_audited(client: httpx.AsyncClient) -> None:
    await client.patch(f"{API}/workspaces/default", json={"quotas": {"max_submits_per_minute": 1}})
    await submit(client)
    assert (
        await client.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    ).status_code == 429
    events = await _events(client)
    assert [(e["action"], e["outcome"], e["details"]["status"]) for e in events] == [
        ("workspace.manage", "allowed", 200),
        ("task.submit", "allowed", 201),
        ("task.submit", "denied", 429),
    ]
    assert events[0]["resource"] == "workspace:default"


async def test_only_admins_read_the_audit_trail(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    operator = await client_for(await issue(client, "operator"))
    assert_problem(await operator.get(f"{API}/audit"), 403, "forbidden")
    assert_problem(await operator.get(f"{API}/audit/verify"), 403, "forbidden")


async def test_paging_through_the_trail(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        await submit(client)
    first = (await client.get(f"{API}/audit", params={"limit": 2})).json()
    assert [e["seq"] for e in first["events"]] == [1, 2]
    assert first["next_after_seq"] == 2
    rest = (await client.get(f"{API}/audit", params={"after_seq": 2, "limit": 10})).json()
    assert [e["seq"] for e in rest["events"]] == [3, 4, 5]
    assert rest["next_after_seq"] is None
    assert_problem(await client.get(f"{API}/audit", params={"limit": 0}), 422, "", "limit")


async def test_verify_finds_an_event_altered_in_the_store(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    for _ in range(4):
        await submit(client)
    await raw.set_column(cp, "default", 3, "outcome", "denied")
    result = (await client.get(f"{API}/audit/verify")).json()
    assert (result["ok"], result["first_broken_seq"], result["checked"]) == (False, 3, 2)
    assert result["reason"]


async def test_an_undecodable_event_makes_paging_409(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    await submit(client)
    await raw.set_raw_body(cp, "default", 1, "{not json")
    assert_problem(await client.get(f"{API}/audit"), 409, "audit-chain-damaged")
    assert (await client.get(f"{API}/audit/verify")).json()["first_broken_seq"] == 1


async def test_a_failed_audit_append_never_fails_the_request(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    """With the chain's head removed the store refuses appends (they would fork the
    chain); requests are still served, and the failure is logged."""
    await submit(client)
    await raw.delete_head(cp, "default")
    with caplog.at_level(logging.WARNING):
        task_id = await submit(client)
    assert (await client.get(f"{API}/tasks/{task_id}")).json()["status"] == "pending"
    assert any("could not be written" in r.getMessage() for r in caplog.records)
    assert ADMIN_TOKEN not in caplog.text
