"""W3: workloads W1 and W2 through ``aragora serve`` and the SDK agent, side by side
with the same workloads on the library, in one run on the same Redis.

Paths, per store (Redis and the embedded SQLite store):

* library: the producer is a ``ControlPlaneCoordinator`` in this process; the worker
  is one process running the library agent loop of ``bench peers`` (one agent,
  ``--concurrency`` loops of ``claim_task`` + ``complete_task``; see
  ``bench/peers/aragora.py``).
* HTTP: one ``aragora serve`` process on the store; the producer is the Python client
  (``AsyncControlPlaneClient``) in this process; the worker is one process running an
  SDK ``aragora.agent.Agent`` with ``concurrency=--concurrency`` and its defaults
  otherwise (see ``bench/sdk_agent.py``). Every request is authenticated and
  authorised; the workspace's submit rate limit is set out of reach.

Workloads (defined in ``bench/workloads.py``, measured the same way on both paths):

* W1: ``--tasks`` tasks submitted one by one while no worker runs (not timed); then
  the worker starts and tasks/s runs from its "go" until the producer has fetched
  every result in submit order. CPU time per task of the worker, the server (HTTP
  path), this process (the producer) and the Redis server (``INFO cpu``,
  server-wide) over the same interval.
* W2: the warm, idle worker; one task at a time, submit -> result in hand,
  ``--latency-samples`` times; p50 and p99.

Each (store, concurrency, path) is measured ``--repeat`` times, round-robin, each time
on a fresh store (a flushed Redis database ``--redis-db`` under a new key prefix, or a
new SQLite file) and, for HTTP, a fresh server. The table shows medians (range of the
repeats in brackets) and HTTP ÷ library for the same store and concurrency: W1
tasks/s (target: at least 0.5) and W2 p50. ``--smoke`` is a tiny run for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from aragora import __version__
from aragora.client import AsyncControlPlaneClient
from bench import report, workloads
from bench.peers import load_adapter
from bench.peers.base import Adapter, Settings, WorkerProcess
from bench.peers.command import RedisDatabase
from bench.sdk_agent import HttpAdapter, SdkAgentProcess, http_settings
from bench.server import ServerProcess, own_cpu_s, redis_cpu_s

STORES = ("redis", "sqlite")
PATHS = ("library", "HTTP")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_DB = 6
SMOKE_TASKS = 100
SMOKE_SAMPLES = 20
UNLIMITED_QUOTAS: dict[str, int | None] = {
    "max_submits_per_minute": 1_000_000_000,
    "max_agents": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=(*STORES, "both"), default="both")
    parser.add_argument("--tasks", type=int, default=5000, help="W1 tasks (%(default)s)")
    parser.add_argument(
        "--latency-samples", type=int, default=300, help="W2 samples per run (%(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row (%(default)s)")
    parser.add_argument(
        "--concurrency",
        default="1",
        help="tasks the worker runs at once: library claim loops and the SDK agent's "
        "concurrency; a comma-separated list gives rows for each (%(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per workload phase (%(default)s)"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("ARAGORA_BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis server, without a database number (default: $ARAGORA_BENCH_REDIS_URL "
        f"or {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=DEFAULT_DB,
        help="database the run owns; it must be empty or left by an earlier run (%(default)s)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--log-dir", type=Path, help="keep worker logs here (default: a temporary directory)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny CI run: {SMOKE_TASKS} tasks, {SMOKE_SAMPLES} samples, one repeat",
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One W1 + W2 measurement of one path."""

    seconds: float
    tasks: int
    worker_cpu_s: float | None
    server_cpu_s: float | None
    producer_cpu_s: float
    redis_cpu_s: float | None
    latency_s: list[float]


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


class Run:
    """Everything one ``python -m bench w3`` owns: the Redis database, the temporary
    directory, the Redis client that reads the server's CPU time."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.log_dir: Path = args.log_dir or workdir
        self.db: RedisDatabase | None = None
        self.redis: Any = None

    async def _measure(
        self,
        adapter: Adapter,
        worker: WorkerProcess,
        on_redis: bool,
        server_cpu: Callable[[], float | None] = lambda: None,
    ) -> Sample:
        args = self.args

        async def redis_cpu() -> float | None:
            return await redis_cpu_s(self.redis) if on_redis else None

        await adapter.open()
        try:
            handles = await workloads.submit_all(adapter, args.tasks, args.timeout)
            worker.start(min(workloads.WORKER_START_TIMEOUT_S, args.timeout))
            before = (worker.cpu_seconds(), server_cpu(), own_cpu_s(), await redis_cpu())
            seconds, results = await workloads.drain(adapter, worker, handles, args.timeout)
            after = (worker.cpu_seconds(), server_cpu(), own_cpu_s(), await redis_cpu())
            for i, value in enumerate(results):
                if value != i + 1:
                    raise workloads.WrongResult(f"task {i} returned {value!r}, expected {i + 1}")
            latency = await workloads.latency(adapter, worker, args.latency_samples, args.timeout)
        finally:
            worker.stop()
            await adapter.close()
        return Sample(
            seconds,
            args.tasks,
            _delta(after[0], before[0]),
            _delta(after[1], before[1]),
            after[2] - before[2],
            _delta(after[3], before[3]),
            latency,
        )

    def _fresh(self, store: str) -> tuple[str, str]:
        """A new namespace, and the store's Redis URL (the flushed database) or ""."""
        namespace = f"bench-w3-{uuid.uuid4().hex[:8]}"
        if store != "redis":
            return namespace, ""
        assert self.db is not None
        self.db.flush()
        return namespace, self.db.url

    async def library(self, store: str, concurrency: int, stem: str) -> Sample:
        namespace, redis_url = self._fresh(store)
        options = {
            "store": store,
            "sqlite_path": str(self.workdir / f"{namespace}.db"),
            "slots": concurrency,
            "batch": 1,
        }
        settings = Settings(f"aragora-{store}", redis_url, namespace, options)
        adapter = load_adapter(settings.system)(settings)
        worker = WorkerProcess(settings, self.log_dir / f"{stem}-worker.log")
        return await self._measure(adapter, worker, store == "redis")

    async def http(self, store: str, concurrency: int, stem: str) -> Sample:
        namespace, redis_url = self._fresh(store)
        server = ServerProcess(
            self.workdir / namespace, redis_url or None, key_prefix=f"{namespace}:"
        )
        async with server:
            async with AsyncControlPlaneClient(server.url, server.token) as admin:
                await admin.update_workspace("default", quotas=UNLIMITED_QUOTAS)
            settings = http_settings(server.url, server.token, concurrency, namespace)
            worker = SdkAgentProcess(settings, self.log_dir / f"{stem}-worker.log")
            return await self._measure(
                HttpAdapter(settings), worker, store == "redis", server.cpu_s
            )

    async def run(self, rows: list[report.PathResult]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if any(r.store == "redis" for r in rows):
            self.db = RedisDatabase(self.args.redis_url, self.args.redis_db)
            self.db.claim()
            self.redis = aioredis.Redis.from_url(self.args.redis_url)
        try:
            for run in range(self.args.repeat):
                for row in rows:
                    await self._one(row, run)
        finally:
            if self.redis is not None:
                await self.redis.aclose()
            if self.db is not None:
                self.db.release()

    async def _one(self, row: report.PathResult, run: int) -> None:
        if row.status != "ok":
            return
        stem = f"w3-{row.store}-{row.path.lower()}-{row.concurrency}-{run}"
        measure: Callable[[str, int, str], Awaitable[Sample]]
        measure = self.library if row.path == "library" else self.http
        started = time.monotonic()
        try:
            sample = await measure(row.store, row.concurrency, stem)
        except Exception as exc:
            row.status = f"failed ({' '.join(str(exc).split())[:200]})".replace("|", "/")
            print(f"[run {run + 1}] {row.store} {row.path}: {row.status}", file=sys.stderr)
            return
        per_task = 1e6 / sample.tasks
        row.tasks_per_s.append(sample.tasks / sample.seconds)
        for values, cpu_s in (
            (row.worker_cpu_us, sample.worker_cpu_s),
            (row.server_cpu_us, sample.server_cpu_s),
            (row.producer_cpu_us, sample.producer_cpu_s),
            (row.redis_cpu_us, sample.redis_cpu_s),
        ):
            if cpu_s is not None:
                values.append(cpu_s * per_task)
        row.add_latency(sample.latency_s)
        print(
            f"[run {run + 1}/{self.args.repeat}] {row.store} {row.path} "
            f"(concurrency {row.concurrency}): {row.tasks_per_s[-1]:,.0f} tasks/s, "
            f"p50 {row.p50_ms[-1]:.2f} ms, p99 {row.p99_ms[-1]:.2f} ms "
            f"({time.monotonic() - started:.1f}s)",
            file=sys.stderr,
        )


def _concurrencies(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"--concurrency: expected integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise SystemExit("--concurrency: every value must be at least 1")
    return values


def _rows(args: argparse.Namespace) -> list[report.PathResult]:
    stores = STORES if args.store == "both" else (args.store,)
    rows = []
    for store in stores:
        for concurrency in _concurrencies(args.concurrency):
            library_worker = load_adapter(f"aragora-{store}").describe_worker(
                {"slots": concurrency}
            )
            http_worker = HttpAdapter.describe_worker({"concurrency": concurrency})
            rows.append(report.PathResult("library", store, concurrency, library_worker))
            rows.append(report.PathResult("HTTP", store, concurrency, http_worker))
    return rows


async def _redis_version(url: str) -> str:
    client = aioredis.Redis.from_url(url)
    try:
        return str((await client.info("server")).get("redis_version", "?"))
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        await client.aclose()


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup: servers, databases


def main(args: argparse.Namespace) -> int:
    if args.smoke:
        args.tasks, args.latency_samples, args.repeat = SMOKE_TASKS, SMOKE_SAMPLES, 1
    if args.tasks < 1 or args.repeat < 1 or args.latency_samples < 1:
        raise SystemExit("--tasks, --repeat and --latency-samples must be at least 1")
    rows = _rows(args)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminated)
    with tempfile.TemporaryDirectory(prefix="aragora-bench-w3-") as tmp:
        asyncio.run(Run(args, Path(tmp)).run(rows))
    meta = {
        "aragora": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "redis": asyncio.run(_redis_version(args.redis_url)),
        "tasks": args.tasks,
        "latency_samples": args.latency_samples,
        "repeat": args.repeat,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(
        f"W3: W1 ({args.tasks} tasks) and W2 ({args.latency_samples} samples) on the library "
        f"and through aragora serve + the SDK agent; median of {args.repeat} run(s); Python "
        f"{meta['python']}, {meta['platform']}, {meta['cpus']} CPUs, Redis {meta['redis']}.\n"
    )
    print(report.w3_table(rows))
    print()
    print(report.markdown_table(["path", "worker (one process)"], _workers(rows), right=99))
    if args.json_out is not None:
        report.write_document(args.json_out, {"meta": meta, "w3": [row.to_json() for row in rows]})
    return 0


def _workers(rows: list[report.PathResult]) -> list[list[str]]:
    seen: dict[str, str] = {}
    for row in rows:
        seen.setdefault(f"{row.path}, {row.store}, concurrency {row.concurrency}", row.worker)
    return [[label, worker] for label, worker in seen.items()]
