"""Tasks per second through submit -> claim -> complete, per store, against a floor.

What is measured: one coordinator (no background reaper) and one agent in this
process, on one store. N tasks are submitted one after another; then the agent claims
and completes them one at a time. Every task thus costs three transitions (submit,
claim, complete), each one atomic store operation: a Lua script on Redis, a
``BEGIN IMMEDIATE`` transaction on SQLite. tasks/s = N / wall time of both phases.
A few tasks in another workspace run first, to warm up connections and scripts.

The floor is the same number of store round trips with no control-plane logic at all,
measured in the same run, so the ratio says how much of the raw store speed is left
once validation, scheduling rules, JSON and the store's own bookkeeping are added:

* Redis: three plain ``HSET`` commands per task (create a hash, mark it running, mark
  it completed with a result) through the same client library (redis-py asyncio with
  hiredis) on the same server. This is the cost of the round trips and the client.
* SQLite: the raw ``sqlite3`` module on a file with the store's settings (WAL,
  ``synchronous=NORMAL``): per task one ``INSERT`` and two ``UPDATE`` statements, each
  in its own ``BEGIN IMMEDIATE ... COMMIT``, called directly on the calling thread.
  This is the cost of three durable transactions.

ratio = control plane tasks/s / floor tasks/s (1.0 would mean no overhead at all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator, TaskSpec

STORES = ("sqlite", "redis")
WARMUP_TASKS = 20
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One store's result: wall times of the control plane and of its floor."""

    store: str
    tasks: int
    seconds: float
    floor: str
    floor_seconds: float

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds

    @property
    def floor_tasks_per_s(self) -> float:
        return self.tasks / self.floor_seconds

    @property
    def ratio(self) -> float:
        return self.tasks_per_s / self.floor_tasks_per_s


async def _run_tasks(cp: ControlPlaneCoordinator, n: int, workspace_id: str) -> None:
    agent = "bench-agent"
    await cp.register_agent(agent, [], model="bench", workspace_id=workspace_id)
    for i in range(n):
        await cp.submit_task("bench", {"i": i}, workspace_id=workspace_id)
    for _ in range(n):
        task = await cp.claim_task(agent, workspace_id=workspace_id)
        if task is None or task.lease_token is None:
            raise RuntimeError("a submitted task could not be claimed")
        await cp.complete_task(
            task.id, {"ok": True}, lease_token=task.lease_token, workspace_id=workspace_id
        )


async def _run_batches(cp: ControlPlaneCoordinator, n: int, workspace_id: str, batch: int) -> None:
    agent = "bench-agent"
    await cp.register_agent(
        agent, [], model="bench", workspace_id=workspace_id, max_concurrent_tasks=batch
    )
    for start in range(0, n, batch):
        specs = [TaskSpec("bench", {"i": i}) for i in range(start, min(start + batch, n))]
        await cp.submit_tasks(specs, workspace_id=workspace_id)
    done = 0
    while done < n:
        tasks = await cp.claim_tasks(agent, max_tasks=batch, workspace_id=workspace_id)
        if not tasks:
            raise RuntimeError("submitted tasks could not be claimed")
        items = [(t.id, {"ok": True}, t.lease_token or "") for t in tasks]
        await cp.complete_tasks(items, workspace_id=workspace_id)
        done += len(tasks)


async def control_plane_seconds(config: ControlPlaneConfig, n: int, batch: int = 1) -> float:
    """Wall time of ``n`` tasks through submit -> claim -> complete on ``config``'s store,
    one task per call, or with ``batch`` > 1 through the batch operations (submit_tasks,
    claim_tasks, complete_tasks) that many at a time."""
    async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
        await _run_tasks(cp, WARMUP_TASKS, "warmup")
        start = time.perf_counter()
        if batch > 1:
            await _run_batches(cp, n, "default", batch)
        else:
            await _run_tasks(cp, n, "default")
        elapsed = time.perf_counter() - start
        counts = await cp.store.counts("default")
        if counts.completed != n:
            raise RuntimeError(f"expected {n} completed tasks, found {counts}")
    return elapsed


def sqlite_floor_seconds(path: Path, n: int) -> float:
    """Wall time of ``n`` x (INSERT, UPDATE, UPDATE), one transaction each, raw sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "CREATE TABLE floor (id INTEGER PRIMARY KEY, status TEXT, payload TEXT, result TEXT)"
        )
        start = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO floor (id, status, payload) VALUES (?, 'pending', ?)",
                (i, f'{{"i":{i}}}'),
            )
            conn.execute("COMMIT")
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE floor SET status = 'running' WHERE id = ?", (i,))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE floor SET status = 'completed', result = '{\"ok\":true}' WHERE id = ?",
                (i,),
            )
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


async def redis_floor_seconds(url: str, prefix: str, n: int) -> float:
    """Wall time of ``n`` x three HSET round trips on the same server and client library."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        for i in range(WARMUP_TASKS):
            await client.hset(f"{prefix}warmup:{i}", "status", "pending")
        start = time.perf_counter()
        for i in range(n):
            await client.hset(f"{prefix}t:{i}", mapping={"status": "pending", "payload": "{}"})
        for i in range(n):
            key = f"{prefix}t:{i}"
            await client.hset(key, "status", "running")
            await client.hset(key, mapping={"status": "completed", "result": '{"ok":true}'})
        return time.perf_counter() - start
    finally:
        await client.aclose()


async def delete_prefix(url: str, prefix: str) -> None:
    """Remove every key under ``prefix`` (what a Redis measurement created)."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


async def measure(
    store: str, n: int, redis_url: str = DEFAULT_REDIS_URL, batch: int = 1
) -> Measurement:
    """Measure one store (``"sqlite"`` in a temporary directory, or ``"redis"`` under a
    key prefix of its own that is removed afterwards); ``batch`` > 1 uses the batch
    operations. The floor is always one unbatched round trip per transition."""
    label = store if batch <= 1 else f"{store}, batches of {batch}"
    if store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="aragora-bench-") as tmp:
            config = ControlPlaneConfig(store_url=f"sqlite:///{Path(tmp) / 'state.db'}")
            seconds = await control_plane_seconds(config, n, batch)
            floor_seconds = sqlite_floor_seconds(Path(tmp) / "floor.db", n)
        return Measurement(label, n, seconds, "raw sqlite3: 3 transactions/task", floor_seconds)
    if store == "redis":
        prefix = f"aragora:bench:{uuid.uuid4().hex[:12]}:"
        config = ControlPlaneConfig(redis_url=redis_url, key_prefix=prefix)
        try:
            seconds = await control_plane_seconds(config, n, batch)
            floor_seconds = await redis_floor_seconds(redis_url, prefix + "floor:", n)
        finally:
            await delete_prefix(redis_url, prefix)
        return Measurement(label, n, seconds, "redis-py: 3 HSET round trips/task", floor_seconds)
    raise ValueError(f"unknown store {store!r}; expected one of {', '.join(STORES)}")


def markdown_table(results: list[Measurement]) -> str:
    lines = [
        "| store | tasks | seconds | tasks/s | floor | floor tasks/s | ratio |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.store} | {r.tasks} | {r.seconds:.2f} | {r.tasks_per_s:,.0f} | {r.floor} "
            f"| {r.floor_tasks_per_s:,.0f} | {r.ratio:.2f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", choices=[*STORES, "both"], default="both", help="store(s) to measure"
    )
    parser.add_argument(
        "--tasks", type=int, default=1000, help="tasks per store (default: %(default)s)"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(
            "ARAGORA_REDIS_URL", os.environ.get("ARAGORA_TEST_REDIS_URL", DEFAULT_REDIS_URL)
        ),
        help="Redis server for the redis store (default: $ARAGORA_REDIS_URL, "
        f"$ARAGORA_TEST_REDIS_URL or {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="also measure the batch operations this many at a time; 1 to skip "
        "(default: %(default)s)",
    )


def main(args: argparse.Namespace) -> int:
    if args.tasks < 1:
        raise SystemExit("--tasks must be at least 1")
    stores = list(STORES) if args.store == "both" else [args.store]
    batches = [1] if args.batch <= 1 else [1, args.batch]
    results = [
        asyncio.run(measure(store, args.tasks, args.redis_url, batch))
        for store in stores
        for batch in batches
    ]
    print(
        "Throughput, submit -> claim -> complete: one coordinator and one agent in one "
        f"process (Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs).\n"
    )
    print(markdown_table(results))
    return 0
