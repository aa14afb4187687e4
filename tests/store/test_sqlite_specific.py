"""What only the SQLite store promises: its file, its errors, its notifications across
store objects and processes, and claims that read indexes instead of scanning."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aragora.control_plane import (
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    StoreUnavailableError,
    TaskPriority,
    TaskStatus,
    ValidationError,
)
from aragora.store.base import NewTask
from aragora.store.sqlite import SqliteStore


def _config(path: Path) -> ControlPlaneConfig:
    return ControlPlaneConfig(store_url=f"sqlite:///{path}")


def _new_task(caps: tuple[str, ...] = (), workspace_id: str = "default") -> NewTask:
    return NewTask(
        id=uuid.uuid4().hex,
        workspace_id=workspace_id,
        task_type="t",
        payload={},
        priority=TaskPriority.NORMAL,
        required_capabilities=caps,
        timeout_s=60.0,
        max_retries=0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(_config(db_path), str(db_path)) as opened:
        yield opened


async def test_open_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    async with SqliteStore(_config(path), str(path)) as store:
        await store.ping()
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_state_survives_reopening_and_submit_order_continues(db_path: Path) -> None:
    async with SqliteStore(_config(db_path), str(db_path)) as first:
        old, _ = await first.submit(_new_task())
    async with SqliteStore(_config(db_path), str(db_path)) as second:
        assert (await second.get_task("default", old.id)).status is TaskStatus.PENDING
        new, _ = await second.submit(_new_task())
        page = await second.list_tasks("default")
        assert [t.id for t in page.tasks] == [new.id, old.id]


async def test_close_is_idempotent_and_later_calls_report_unavailable(db_path: Path) -> None:
    store = SqliteStore(_config(db_path), str(db_path))
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.submit(_new_task())
    with pytest.raises(StoreUnavailableError):
        await store.open()


@pytest.fixture
def garbage_file(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite database, not even close" * 100)
    return path


async def test_a_file_that_is_not_a_database_is_store_unavailable(garbage_file: Path) -> None:
    store = SqliteStore(_config(garbage_file), str(garbage_file))
    with pytest.raises(StoreUnavailableError) as raised:
        await store.open()
    assert not isinstance(raised.value, sqlite3.Error)
    await store.close()


async def test_a_path_under_a_file_is_store_unavailable(garbage_file: Path) -> None:
    path = garbage_file / "sub" / "state.db"
    store = SqliteStore(_config(path), str(path))
    with pytest.raises(StoreUnavailableError):
        await store.open()
    await store.close()


async def test_unknown_cursor_is_a_validation_error(store: SqliteStore) -> None:
    with pytest.raises(ValidationError) as raised:
        await store.list_tasks("default", cursor="not-a-cursor")
    assert raised.value.field == "cursor"


async def test_commit_of_another_store_object_wakes_waiters(
    store: SqliteStore, db_path: Path
) -> None:
    async with SqliteStore(_config(db_path), str(db_path)) as other:
        await store.register_agent("default", "a", (), "m", 1, {})
        async with store.watch_ready("default") as watch:
            await other.submit(_new_task())
            assert await watch.wait(5.0)
        claimed = (await store.claim("default", "a")).task
        assert claimed is not None and claimed.lease_token
        async with other.watch_task("default", claimed.id) as watch:
            await store.complete("default", claimed.id, claimed.lease_token, "r", None)
            assert await watch.wait(5.0)
        assert (await other.get_task("default", claimed.id)).result == "r"


async def test_own_commits_wake_only_the_channels_they_concern(store: SqliteStore) -> None:
    unrelated, _ = await store.submit(_new_task())
    async with (
        store.watch_task("default", unrelated.id) as unrelated_watch,
        store.watch_ready("default") as ready_watch,
    ):
        await store.submit(_new_task())
        assert await ready_watch.wait(1.0)
        # Several polling rounds pass without waking the task watch: the poller must not
        # mistake this store's own commit for another process's.
        assert not await unrelated_watch.wait(0.2)


async def test_claim_drops_ready_queues_it_finds_empty(store: SqliteStore, db_path: Path) -> None:
    await store.register_agent("default", "a", ("x",), "m", 1, {})
    task, _ = await store.submit(_new_task(("x",)))
    await store.cancel("default", task.id)
    assert (await store.claim("default", "a")).task is None
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ready_queues").fetchone()[0] == 0
    conn.close()


async def test_claim_and_reap_seek_indexes_in_order(store: SqliteStore, db_path: Path) -> None:
    await store.register_agent("default", "a", ("x", "y"), "m", 4, {})
    for caps in [(), ("x",), ("y",), ("x", "y"), ("z",)] * 3:
        await store.submit(_new_task(caps))
    claimed = (await store.claim("default", "a")).task
    assert claimed is not None and claimed.lease_token
    await store.fail("default", claimed.id, claimed.lease_token, "x", True)

    statements: list[str] = []

    def trace_on() -> None:
        conn = store._conn
        assert conn is not None
        conn.set_trace_callback(statements.append)

    def trace_off() -> None:
        conn = store._conn
        assert conn is not None
        conn.set_trace_callback(None)

    await store._run(trace_on)
    await store.claim("default", "a")
    await store.reap("default")
    await store._run(trace_off)

    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE"))]
    assert queries
    with sqlite3.connect(db_path) as conn:
        for sql in queries:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            # A full scan, or a sort of every matching row to find the first, means the
            # statement reads O(n) rows instead of seeking an index in order.
            slow = [s for s in plan if s.startswith("SCAN") or "TEMP B-TREE" in s]
            assert not slow, (sql, plan)
    conn.close()


_CLAIMER = """
import asyncio, sys
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator

async def main(url: str, agent: str) -> None:
    async with ControlPlaneCoordinator(ControlPlaneConfig(store_url=url), run_reaper=False) as cp:
        await cp.register_agent(agent, [], model="m", max_concurrent_tasks=1)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        while (task := await cp.claim_task(agent)) is not None:
            assert task.lease_token
            await cp.complete_task(task.id, agent, lease_token=task.lease_token)
            print(task.id, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_processes_sharing_the_file_never_claim_the_same_task(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    async with ControlPlaneCoordinator(_config(db_path), run_reaper=False) as cp:
        ids = {await cp.submit_task("t", {"i": i}) for i in range(90)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CLAIMER,
                url,
                f"p{n}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for n in range(3)
        ]
        for proc in procs:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
        outputs = await asyncio.gather(*(proc.communicate(b"go\n") for proc in procs))
        assert [proc.returncode for proc in procs] == [0, 0, 0]
        claimed = [line for out, _err in outputs for line in out.decode().split()]
        assert len(claimed) == len(set(claimed)) == len(ids)
        assert set(claimed) == ids
        counts = await cp.store.counts("default")
        assert counts.completed == len(ids) and counts.pending == 0


_SUBMITTER = """
import asyncio, sys
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator

async def main(url: str) -> None:
    async with ControlPlaneCoordinator(ControlPlaneConfig(store_url=url), run_reaper=False) as cp:
        print(await cp.submit_task("t", {"from": "another process"}), flush=True)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets: Linux only")
async def test_a_commit_in_another_process_wakes_a_waiter_before_any_poll(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the fallback poll an hour away, only the wake-up can end this wait in time.
    monkeypatch.setattr("aragora.store.sqlite.FALLBACK_POLL_INTERVAL_S", 3600.0)
    async with ControlPlaneCoordinator(_config(db_path), run_reaper=False) as cp:
        await cp.register_agent("a", [], model="m")
        waiting = asyncio.create_task(cp.claim_task("a", wait_s=45))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SUBMITTER, f"sqlite:///{db_path}", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        task = await asyncio.wait_for(waiting, 40)
        assert task is not None and task.id == out.decode().strip()


def _registrations(db_path: str) -> set[str] | None:
    """The names registered for wake-ups next to the file (None: no such directory)."""
    directory = Path(os.path.realpath(db_path) + "-wake")
    return {p.name for p in directory.iterdir()} if directory.is_dir() else None


def _register_dead_listener(db_path: str) -> str:
    name = "999999999-000000000000"
    (Path(os.path.realpath(db_path) + "-wake") / name).touch()
    return name


async def test_a_dead_listener_is_unregistered_by_the_next_wake_up(store: SqliteStore) -> None:
    dead = _register_dead_listener(store.path)
    assert dead in (_registrations(store.path) or set())
    await store.submit(_new_task())
    remaining = _registrations(store.path)
    assert remaining is not None and dead not in remaining
    assert len(remaining) == 1  # the store's own registration


async def test_without_wake_ups_the_poll_still_wakes_waiters(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aragora.store.sqlite.LocalWakeup.open", lambda path: None)
    async with (
        SqliteStore(_config(db_path), str(db_path)) as store,
        SqliteStore(_config(db_path), str(db_path)) as other,
    ):
        assert _registrations(str(db_path)) is None
        async with store.watch_ready("default") as watch:
            await other.submit(_new_task())
            assert await watch.wait(5.0)
