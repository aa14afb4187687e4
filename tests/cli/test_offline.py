"""Commands that work without a server: ``audit verify --file`` on an export, and
``keys rotate`` straight on a store (a real SQLite file, a real Redis)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from aragora.audit import AuditLog
from aragora.cli import ExitCode, app, verify_export_file
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.crypto import PayloadCipher, is_encrypted
from tests.crypto.keys import new_key

runner = CliRunner()


# -- audit verify --file -------------------------------------------------------------
async def _export(path: Path, tmp_path: Path, events: int, workspace: str = "ws-a") -> None:
    config = ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'audit.db'}")
    async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
        log = AuditLog.for_store(cp.store)
        for i in range(events):
            await log.append(
                workspace,
                principal="tok_1",
                action="task.submit",
                resource=f"task:{i}",
                outcome="allowed",
                details={"status": 201},
            )
        with path.open("w") as out:
            assert await log.export(workspace, out) == events
        await log.close()


def test_an_intact_export_verifies(tmp_path: Path) -> None:
    export = tmp_path / "audit.jsonl"
    asyncio.run(_export(export, tmp_path, 4))

    done = runner.invoke(app, ["audit", "verify", "--file", str(export)])
    assert done.exit_code == ExitCode.OK, done.output
    assert done.stdout.startswith(f"ok: {export} (workspace ws-a) is intact, 4 event(s)")

    as_json = runner.invoke(app, ["--json", "audit", "verify", "--file", str(export)])
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["checked"], report["line"], report["head_seq"]) == (
        True,
        4,
        None,
        4,
    )


def test_an_edited_line_is_named(tmp_path: Path) -> None:
    export = tmp_path / "audit.jsonl"
    asyncio.run(_export(export, tmp_path, 4))
    lines = export.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["resource"] = "task:forged"
    lines[2] = json.dumps(edited)
    export.write_text("\n".join(lines) + "\n")

    done = runner.invoke(app, ["audit", "verify", "--file", str(export)])
    assert done.exit_code == ExitCode.AUDIT_BROKEN
    assert done.stdout == ""
    assert done.stderr == (
        f"error: {export} (workspace ws-a) is broken at event 3 (line 3): "
        "the event's content does not match its hash (altered)\n"
    )

    as_json = runner.invoke(app, ["audit", "verify", "--file", str(export), "--json"])
    assert as_json.exit_code == ExitCode.AUDIT_BROKEN
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["first_broken_seq"], report["line"]) == (False, 3, 3)


def test_lines_are_counted_in_the_file_and_the_workspace_can_be_pinned(tmp_path: Path) -> None:
    export = tmp_path / "audit.jsonl"
    asyncio.run(_export(export, tmp_path, 3))
    lines = export.read_text().splitlines()
    del lines[1]  # event 2 removed; blank lines do not count as events
    export.write_text("\n" + "\n\n".join(lines) + "\n")

    check = verify_export_file(export)
    assert not check.result.ok
    assert (check.result.first_broken_seq, check.broken_line) == (2, 4)
    assert check.result.reason == "event 2 is missing (the next stored is 3)"

    asyncio.run(_export(export, tmp_path / "other", 2))
    pinned = runner.invoke(app, ["audit", "verify", "--file", str(export), "--workspace", "ws-b"])
    assert pinned.exit_code == ExitCode.AUDIT_BROKEN
    assert "at event 1 (line 1): the event belongs to workspace 'ws-a'" in pinned.stderr


def test_a_file_that_is_not_an_export_is_broken_at_line_1(tmp_path: Path) -> None:
    export = tmp_path / "notes.txt"
    export.write_text("not json\n")
    done = runner.invoke(app, ["audit", "verify", "--file", str(export)])
    assert done.exit_code == ExitCode.AUDIT_BROKEN
    assert "(workspace default) is broken at event 1 (line 1): line cannot be decoded" in (
        done.stderr
    )
    missing = runner.invoke(app, ["audit", "verify", "--file", str(tmp_path / "absent")])
    assert missing.exit_code == ExitCode.USAGE


# -- keys rotate ---------------------------------------------------------------------
async def _seal_tasks(config: ControlPlaneConfig, spec: str, workspaces: list[str]) -> list[str]:
    """Submit a task in each workspace (payload sealed) and complete the first (result)."""
    cipher = PayloadCipher.from_spec(spec)
    ids = []
    async with ControlPlaneCoordinator(config, run_reaper=False, cipher=cipher) as cp:
        for ws in workspaces:
            ids.append(await cp.submit_task("t", {"ws": ws}, workspace_id=ws))
        await cp.register_agent("a", [], "m", workspace_id=workspaces[0])
        task = await cp.claim_task("a", workspace_id=workspaces[0])
        assert task is not None and task.lease_token
        await cp.complete_task(
            task.id, {"done": True}, lease_token=task.lease_token, workspace_id=workspaces[0]
        )
    return ids


async def _read_back(
    config: ControlPlaneConfig, spec: str, ids: list[str], workspaces: list[str]
) -> list[tuple[object, object, str]]:
    """Each task's payload and result as served with ``spec``, and its stored key id."""
    cipher = PayloadCipher.from_spec(spec)
    found = []
    async with ControlPlaneCoordinator(config, run_reaper=False, cipher=cipher) as cp:
        for ws, task_id in zip(workspaces, ids, strict=True):
            task = await cp.get_task(task_id, workspace_id=ws)
            stored = await cp.store.get_task(ws, task_id)
            assert is_encrypted(stored.payload)
            found.append((task.payload, task.result, str(stored.payload["kid"])))
    return found


@pytest.fixture
def no_store_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "ARAGORA_STORE_URL",
        "ARAGORA_REDIS_URL",
        "ARAGORA_DATA_DIR",
        "ARAGORA_KEY_PREFIX",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_keys_rotate_on_a_data_dir(tmp_path: Path, no_store_env: pytest.MonkeyPatch) -> None:
    old, new = f"old:{new_key()}", f"new:{new_key()}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = ControlPlaneConfig(store_url=f"sqlite:///{data_dir / 'state.db'}")
    workspaces = ["default", "ws-b"]
    ids = asyncio.run(_seal_tasks(config, old, workspaces))

    no_store_env.setenv("ARAGORA_ENCRYPTION_KEYS", f"{new},{old}")
    done = runner.invoke(app, ["keys", "rotate", "--data-dir", str(data_dir), "--json"])
    assert done.exit_code == ExitCode.OK, done.output
    assert json.loads(done.stdout) == {
        "rotated_tasks": 2,
        "workspaces": workspaces,
        "primary_key_id": "new",
    }
    again = runner.invoke(app, ["keys", "rotate", "--data-dir", str(data_dir)])
    assert again.stdout == "re-encrypted 0 task(s) under key 'new' in 2 workspace(s)\n"

    # The old key is no longer needed to read anything.
    assert asyncio.run(_read_back(config, new, ids, workspaces)) == [
        ({"ws": "default"}, {"done": True}, "new"),
        ({"ws": "ws-b"}, None, "new"),
    ]


def test_keys_rotate_on_redis(redis_url: str, no_store_env: pytest.MonkeyPatch) -> None:
    old, new = f"old:{new_key()}", f"new:{new_key()}"
    prefix = f"aragora:test:{uuid.uuid4().hex[:12]}:"
    config = ControlPlaneConfig(redis_url=redis_url, key_prefix=prefix)
    try:
        ids = asyncio.run(_seal_tasks(config, old, ["default"]))
        no_store_env.setenv("ARAGORA_ENCRYPTION_KEYS", f"{new},{old}")
        no_store_env.setenv("ARAGORA_KEY_PREFIX", prefix)
        done = runner.invoke(app, ["keys", "rotate", "--store", redis_url])
        assert done.exit_code == ExitCode.OK, done.output
        assert done.stdout == "re-encrypted 1 task(s) under key 'new' in 1 workspace(s)\n"
        assert asyncio.run(_read_back(config, new, ids, ["default"])) == [
            ({"ws": "default"}, {"done": True}, "new")
        ]
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_keys_rotate_needs_keys_and_a_store(
    tmp_path: Path, no_store_env: pytest.MonkeyPatch
) -> None:
    no_store_env.delenv("ARAGORA_ENCRYPTION_KEYS", raising=False)
    unset = runner.invoke(app, ["keys", "rotate", "--data-dir", str(tmp_path)])
    assert unset.exit_code == ExitCode.USAGE
    assert unset.stderr.startswith("error: ARAGORA_ENCRYPTION_KEYS is not set")

    no_store_env.setenv("ARAGORA_ENCRYPTION_KEYS", f"new:{new_key()}")
    empty = runner.invoke(app, ["keys", "rotate", "--data-dir", str(tmp_path / "nothing")])
    assert empty.exit_code == ExitCode.USAGE
    assert empty.stderr.startswith("error: no store at ")

    no_store_env.setenv("ARAGORA_ENCRYPTION_KEYS", "new:short")
    bad = runner.invoke(app, ["keys", "rotate", "--data-dir", str(tmp_path)])
    assert bad.exit_code == ExitCode.USAGE
    assert "ARAGORA_ENCRYPTION_KEYS: key 'new'" in bad.stderr
