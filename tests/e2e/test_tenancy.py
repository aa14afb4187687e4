"""End to end, with tenancy: the first admin token, workspaces and role tokens through
the CLI, revocation and quotas across servers sharing one Redis, the audit trail over
HTTP and offline, and key rotation on a stopped deployment's store."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from aragora.client import AsyncControlPlaneClient, AuthenticationError, RateLimitedError
from aragora.control_plane import QuotaExceededError, TaskStatus
from tests.crypto.keys import spec
from tests.e2e.conftest import EXAMPLES, Processes, ServerProc, run_cli, unique

TOKEN_RE = re.compile(r"acp_[0-9A-Za-z]{22,128}_[0-9A-Za-z]{6}")
REFUSED = 8
AUTH = 4


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def trio(shared_procs: Processes) -> list[ServerProc]:
    """Three servers on one Redis: same key prefix, same secret key, same admin token."""
    env = {"ARAGORA_KEY_PREFIX": shared_procs.redis_prefix()}
    servers = [
        shared_procs.server(store=shared_procs.redis_url, env=env, wait=False) for _ in range(3)
    ]
    for server in servers:
        server.wait_ready()
    return servers


# -- (a) the first admin token ----------------------------------------------------------
def test_first_start_prints_the_admin_token_once_and_keeps_it_private(procs: Processes) -> None:
    first = procs.server(token=None, shared_secret=False)
    token_file = first.data_dir / "admin.token"
    token = token_file.read_text().strip()
    assert TOKEN_RE.fullmatch(token)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((first.data_dir / "secret.key").stat().st_mode) == 0o600

    listed = run_cli("agents", "list", "--json", "--url", first.url, "--token", token)
    assert _json(listed) == {"agents": []}
    assert procs.stop(first) in (0, -15)
    assert TOKEN_RE.findall(first.log()) == [token]

    second = procs.server(token=None, shared_secret=False, data_dir=first.data_dir)
    listed = run_cli("workspace", "list", "--json", "--url", second.url, "--token", token)
    assert [w["name"] for w in _json(listed)["workspaces"]] == ["default"]
    assert procs.stop(second) in (0, -15)
    assert TOKEN_RE.findall(second.log()) == []
    assert token_file.read_text().strip() == token


# -- (b) workspaces and tokens through the CLI, revocation across servers ---------------
def test_workspace_and_token_lifecycle_through_the_cli(trio: list[ServerProc]) -> None:
    one, two, _ = trio
    name = unique("team")

    created = _json(
        run_cli(
            "workspace", "create", name, "--max-agents", "2", "--max-pending-tasks", "unlimited",
            "--budget", "50", "--budget-period", "daily", "--json", server=one,
        )
    )  # fmt: skip
    assert created["name"] == name
    assert created["quotas"]["max_agents"] == 2
    assert created["quotas"]["max_pending_tasks"] is None
    assert created["budget"]["limit"] == 50 and created["budget"]["period"] == "daily"
    again = run_cli("workspace", "create", name, server=two)
    assert again.returncode == 7 and again.stderr.count("\n") == 1
    assert _json(run_cli("workspace", "show", name, "--json", server=two))["name"] == name
    listed = _json(run_cli("workspace", "list", "--json", server=two))["workspaces"]
    assert {"default", name} <= {w["name"] for w in listed}

    issued = run_cli(
        "token", "create", "--workspace", name, "--role", "submitter", "--expires-in", "1d",
        "--json", server=one,
    )  # fmt: skip
    submitter = _json(issued)
    assert (submitter["workspace"], submitter["role"]) == (name, "submitter")
    assert submitter["expires_at"] - time.time() == pytest.approx(86_400, abs=120)
    assert "shown only this once" in issued.stderr
    viewer_run = run_cli("token", "create", "--workspace", name, "--role", "viewer", server=one)
    assert viewer_run.returncode == 0, viewer_run.stderr
    viewer = viewer_run.stdout.strip()
    assert TOKEN_RE.fullmatch(viewer) and viewer_run.stdout == viewer + "\n"
    assert "role viewer in workspace" in viewer_run.stderr

    # The submitter submits, reads and cancels, through either server; no more.
    s_token = submitter["token"]
    task_id = _json(
        run_cli("task", "submit", "echo", "-c", unique("none"), "--json", server=two, token=s_token)
    )["task_id"]
    assert _json(run_cli("task", "get", task_id, "--json", server=one, token=s_token))["id"] == (
        task_id
    )
    for args in (["task", "retry", task_id], ["token", "list"], ["budget"], ["workspace", "list"]):
        refused = run_cli(*args, server=one, token=s_token)
        assert refused.returncode == REFUSED, (args, refused.stderr)
        assert refused.stderr.startswith("error: permission denied (403)")
        assert refused.stderr.count("\n") == 1

    # The viewer reads only.
    tasks = _json(run_cli("task", "list", "--json", server=two, token=viewer))["tasks"]
    assert [t["id"] for t in tasks] == [task_id]
    assert _json(run_cli("budget", "--json", server=two, token=viewer))["spent"] == 0
    for args in (["task", "submit", "echo"], ["task", "cancel", task_id]):
        assert run_cli(*args, server=one, token=viewer).returncode == REFUSED, args
    cancelled = run_cli("task", "cancel", task_id, "--json", server=one, token=s_token)
    assert _json(cancelled)["status"] == "cancelled"

    tokens = _json(run_cli("token", "list", "--workspace", name, "--json", server=two))["tokens"]
    assert sorted(t["role"] for t in tokens) == ["submitter", "viewer"]
    assert {t["workspace"] for t in tokens} == {name}

    # Revoked through one server, refused by the other on the very next request.
    revoked = run_cli("token", "revoke", submitter["token_id"], "--json", server=one)
    assert _json(revoked) == {"token_id": submitter["token_id"], "revoked": True}
    started = time.monotonic()
    with two.client(s_token) as cp, pytest.raises(AuthenticationError):
        cp.list_tasks()
    assert time.monotonic() - started < 1.0
    for server in (two, one):
        refused = run_cli("task", "list", server=server, token=s_token)
        assert refused.returncode == AUTH
        assert refused.stderr.startswith("error: authentication failed (401)")
    tokens = _json(run_cli("token", "list", "--workspace", name, "--json", server=two))["tokens"]
    by_id = {t["token_id"]: t for t in tokens}
    assert by_id[submitter["token_id"]]["revoked_at"] is not None
    again_revoked = run_cli("token", "revoke", "tok_unknown000", server=two)
    assert again_revoked.returncode == 3


# -- (c) quotas and rate limits across three servers ----------------------------------
async def _submit_everywhere(
    servers: list[ServerProc], token: str, count: int
) -> list[str | BaseException]:
    """``count`` submits at once, spread round-robin over the servers."""
    clients = [AsyncControlPlaneClient(s.url, token) for s in servers]
    try:
        return await asyncio.gather(
            *(
                clients[i % len(clients)].submit_task("echo", {"n": i}, [unique("nobody")])
                for i in range(count)
            ),
            return_exceptions=True,
        )
    finally:
        for client in clients:
            await client.aclose()


def _split(outcomes: list[str | BaseException]) -> tuple[list[str], list[BaseException]]:
    accepted = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    return accepted, refused


@pytest.mark.timeout(120)
def test_pending_quota_holds_across_three_servers(trio: list[ServerProc]) -> None:
    name = unique("quota")
    _json(
        run_cli("workspace", "create", name, "--max-pending-tasks", "10", "--json", server=trio[0])
    )
    token = trio[1].role_token("submitter", name)

    accepted, refused = _split(asyncio.run(_submit_everywhere(trio, token, 30)))

    assert len(accepted) == 10 and len(set(accepted)) == 10
    assert len(refused) == 20
    assert all(isinstance(e, QuotaExceededError) for e in refused), refused
    assert {(e.quota, e.limit) for e in refused if isinstance(e, QuotaExceededError)} == {
        ("max_pending_tasks", 10)
    }
    with trio[2].client(token) as cp:
        pending = cp.list_tasks(TaskStatus.PENDING, limit=100).tasks
    assert sorted(t.id for t in pending) == sorted(accepted)


@pytest.mark.timeout(120)
def test_submit_rate_limit_holds_across_three_servers(trio: list[ServerProc]) -> None:
    name = unique("rate")
    _json(
        run_cli(
            "workspace", "create", name, "--max-submits-per-minute", "5", "--json", server=trio[2]
        )
    )
    tokens = [s.role_token("submitter", name) for s in trio]

    outcomes = asyncio.run(_submit_everywhere(trio, tokens[0], 15))
    accepted, refused = _split(outcomes)

    assert len(accepted) == 5
    assert len(refused) == 10
    assert all(isinstance(e, RateLimitedError) for e in refused), refused
    assert all(0 < e.retry_after_s <= 60 for e in refused if isinstance(e, RateLimitedError))
    # The workspace's allowance is used up for every token, on every server.
    later, late_refused = _split(asyncio.run(_submit_everywhere(trio, tokens[1], 3)))
    assert later == [] and len(late_refused) == 3
    refused_cli = run_cli("task", "submit", "echo", server=trio[1], token=tokens[2])
    assert refused_cli.returncode == REFUSED
    assert refused_cli.stderr.startswith("error: rate limited: ")


# -- (d) the audit trail over HTTP and offline ----------------------------------------
def test_audit_verify_and_export_then_verify_offline(
    shared_server: ServerProc, tmp_path: Path
) -> None:
    audited = shared_server
    name = unique("audit")
    _json(run_cli("workspace", "create", name, "--json", server=audited))
    admin = audited.role_token("admin", name)
    submitter = audited.role_token("submitter", name)
    with audited.client(submitter) as cp:
        ids = [cp.submit_task("echo", {"n": n}, [unique("none")]) for n in range(3)]
        cp.cancel_task(ids[0])

    verified = _json(run_cli("audit", "verify", "--json", server=audited, token=admin))
    assert verified["ok"] is True and verified["checked"] >= 4
    human = run_cli("audit", "verify", server=audited, token=admin)
    assert human.returncode == 0 and human.stdout.startswith("ok: the audit chain is intact")
    assert run_cli("audit", "verify", server=audited, token=submitter).returncode == REFUSED

    export = tmp_path / "audit.jsonl"
    exported = _json(
        run_cli("audit", "export", "--output", str(export), "--json", server=audited, token=admin)
    )
    lines = export.read_text().splitlines()
    assert exported == {"events": len(lines), "output": str(export)}
    events = [json.loads(line) for line in lines]
    assert {e["workspace_id"] for e in events} == {name}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert f"task:{ids[0]}" in {e["resource"] for e in events}
    streamed = run_cli("audit", "export", server=audited, token=admin)
    assert streamed.stdout.splitlines()[: len(lines)] == lines

    offline = run_cli("audit", "verify", "--file", str(export))
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.startswith(f"ok: {export} (workspace {name}) is intact")

    forged = dict(events[1], outcome="denied" if events[1]["outcome"] != "denied" else "allowed")
    lines[1] = json.dumps(forged, separators=(",", ":"), sort_keys=True)
    export.write_text("\n".join(lines) + "\n")
    broken = run_cli("audit", "verify", "--file", str(export), "--json")
    assert broken.returncode == 9
    assert json.loads(broken.stdout)["line"] == 2
    assert broken.stderr == (
        f"error: {export} (workspace {name}) is broken at event 2 (line 2): "
        "the event's content does not match its hash (altered)\n"
    )


# -- (e) key rotation ---------------------------------------------------------------
@pytest.mark.timeout(120)
def test_keys_rotate_reencrypts_what_the_old_key_wrote(procs: Processes) -> None:
    old_spec = spec("old")
    new_spec = spec("new")
    before = procs.server(env={"ARAGORA_ENCRYPTION_KEYS": old_spec})
    payloads = {}
    with before.client() as cp:
        for n in range(3):
            payloads[cp.submit_task("echo", {"secret": n}, ["rotation"])] = {"secret": n}
        cp.register_agent("rotator", ["rotation"], "m")
        claimed = cp.claim_task("rotator")
        assert claimed is not None and claimed.lease_token
        cp.complete_task(claimed.id, {"answer": 42}, lease_token=claimed.lease_token)
    assert procs.stop(before) in (0, -15)

    env = {"ARAGORA_ENCRYPTION_KEYS": f"{new_spec},{old_spec}"}
    data_dir = str(before.data_dir)
    rotated = run_cli("keys", "rotate", "--data-dir", data_dir, "--json", env=env)
    assert _json(rotated) == {
        "rotated_tasks": 3,
        "workspaces": ["default"],
        "primary_key_id": "new",
    }
    again = run_cli("keys", "rotate", "--data-dir", data_dir, env=env)
    assert again.stdout == "re-encrypted 0 task(s) under key 'new' in 1 workspace(s)\n"

    # Served again with the new key alone: everything still reads.
    after = procs.server(env={"ARAGORA_ENCRYPTION_KEYS": new_spec}, data_dir=before.data_dir)
    with after.client() as cp:
        for task_id, payload in payloads.items():
            task = cp.get_task(task_id)
            assert task.payload == payload
            if task_id == claimed.id:
                assert task.result == {"answer": 42}


# -- access rules through the CLI -----------------------------------------------------
def test_policy_put_list_delete_through_the_cli(shared_server: ServerProc) -> None:
    name = unique("rules")
    _json(run_cli("workspace", "create", name, "--json", server=shared_server))
    admin = shared_server.role_token("admin", name)
    submitter = shared_server.role_token("submitter", name)
    cedar = EXAMPLES / "policies" / "no-execute.cedar"

    put = _json(
        run_cli(
            "policy", "put", "no-execute", "--file", str(cedar), "--description", "code only",
            "--json", server=shared_server, token=admin,
        )
    )  # fmt: skip
    assert (put["rule_id"], put["description"]) == ("no-execute", "code only")
    assert put["text"] == cedar.read_text()
    listed = _json(run_cli("policy", "list", "--json", server=shared_server, token=admin))
    assert [r["rule_id"] for r in listed["rules"]] == ["no-execute"] and listed["version"] >= 1

    denied = run_cli("task", "submit", "execute", server=shared_server, token=submitter)
    assert denied.returncode == REFUSED
    assert denied.stderr.startswith("error: permission denied (403)")
    allowed = run_cli(
        "task", "submit", "execute", "-c", "code", server=shared_server, token=submitter
    )
    assert allowed.returncode == 0, allowed.stderr
    assert run_cli("policy", "list", server=shared_server, token=submitter).returncode == REFUSED

    deleted = run_cli("policy", "delete", "no-execute", server=shared_server, token=admin)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted no-execute\n")
    again = run_cli("policy", "delete", "no-execute", server=shared_server, token=admin)
    assert again.returncode == 3
    invalid = shared_server.data_dir.parent / "invalid.cedar"
    invalid.write_text("forbid(principal, action, resource) when { context.nope };\n")
    rejected = run_cli(
        "policy", "put", "bad", "--file", str(invalid), server=shared_server, token=admin
    )
    assert rejected.returncode == 2 and rejected.stderr.count("\n") == 1
