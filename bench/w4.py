"""W4 scale: claim latency against the number of pending tasks, the cost of agents
heartbeating, and the bytes each pending task takes in the store.

(a) Claim latency. Two stores of the same kind side by side, one holding ``--pending``
    SMALL and the other LARGE pending tasks (default 1,000 and 1,000,000): two key
    prefixes on the same Redis server, or two SQLite files in the same directory. Both
    are filled with ``submit_tasks`` in batches of ``FILL_BATCH`` (the fill rate is
    reported). One agent per store then takes ``--samples`` samples, alternating
    between the two stores in ``--rounds`` rounds so that the machine's noise falls on
    both alike: submit one task (not timed, so the number pending stays put), time
    ``claim_task``, then time ``complete_task`` of what it got. p50 and p99 of claim
    and of claim + complete, and LARGE ÷ SMALL (target: within 1.3x at p50).

(b) Heartbeat cost. ``--agents`` agents (default 1,000 and 10,000) registered, then
    heartbeating at the default interval (``ControlPlaneConfig.heartbeat_interval``),
    evenly spread, from a load generator in this process, through two paths:

    * library: ``ControlPlaneCoordinator.heartbeat`` straight on the store;
    * HTTP: ``AsyncControlPlaneClient.heartbeat`` to one ``aragora serve`` process.

    Over a window of ``--duration`` seconds (after ``--warmup`` s of load) are taken: the
    heartbeats answered per second, the CPU of the ``aragora serve`` process (from
    /proc) and of the Redis server (``INFO cpu``), each as % of one core, and Redis's
    commands per second (``INFO stats``; the commands a script runs count too, so one
    heartbeat script is several). One store operation per heartbeat on the library path
    (one script, or one SQLite transaction). The same figures over ``--idle`` seconds
    with the server up and no agents, measured just before, are the floor; "net" is
    load minus floor. The load generator's CPU is shown but not counted, except on the
    library path with SQLite, where the store runs inside the heartbeating process and
    that process's CPU is all there is to count. When the generator cannot keep up
    with the target rate, "per heartbeat" figures still hold and the table also gives
    the cost projected to the target rate. Target: 10,000 agents under 10% of one core
    on the server.

(c) Bytes per pending task, from the LARGE store of (a), payload ``{"x": <int>}``:
    Redis ``used_memory`` (``INFO memory``, server-wide) before and after the fill,
    divided by the tasks; and ``MEMORY USAGE`` of each key kind: a sample of task
    hashes, and the whole of each shared index (queue, status and listing sorted sets),
    divided by the tasks. SQLite: the file (and WAL) size after the store is closed,
    divided by the tasks, with the share of each table and index (``dbstat``).

Redis: unless ``--redis-url`` names a server, the run starts a private ``redis-server``
(no persistence) when one is on PATH, so that other clients of a shared server count
in neither its CPU nor its memory. The run owns database ``--redis-db`` (it must be
empty or left by an earlier run) and flushes it between measurements and at the end.
``--smoke`` is a tiny run for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from aragora import __version__
from aragora.client import AsyncControlPlaneClient
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator, TaskSpec
from bench import report
from bench.peers.command import RedisDatabase
from bench.server import RedisServerProcess, ServerProcess, own_cpu_s, redis_cpu_s
from bench.workloads import percentile

STORES = ("redis", "sqlite")
PARTS = ("claims", "heartbeats")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_DB = 7
FILL_BATCH = 1000
TASK_TYPE = "bench"
AGENT_MODEL = "bench"
MEMORY_SAMPLE_TASKS = 200
WARMUP_S = 3.0
LOAD_TICK_S = 0.005
REGISTER_CONCURRENCY = 32
HEARTBEAT_IN_FLIGHT = 64
SMOKE = {
    "pending": "100,1000",
    "samples": 20,
    "rounds": 2,
    "agents": "10,100",
    "duration": 1.0,
    "idle": 0.5,
    "warmup": 0.5,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=(*STORES, "both"), default="both")
    parser.add_argument(
        "--part",
        choices=(*PARTS, "all"),
        default="all",
        help="claims: (a) and (c); heartbeats: (b) (%(default)s)",
    )
    parser.add_argument(
        "--pending",
        default="1000,1000000",
        help="SMALL,LARGE pending tasks for the claim latency (%(default)s)",
    )
    parser.add_argument(
        "--samples", type=int, default=300, help="claims timed per store size (%(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternations between the sizes (%(default)s)"
    )
    parser.add_argument(
        "--agents", default="1000,10000", help="agent counts for the heartbeats (%(default)s)"
    )
    parser.add_argument(
        "--paths", default="library,http", help="heartbeat paths: library, http (%(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of heartbeat load (%(default)s)"
    )
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds of the idle floor (%(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_S,
        help="seconds of heartbeat load before the window (%(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        help="Redis server, without a database number (default: a private redis-server "
        "started for the run when one is on PATH, so that other clients' load does not "
        f"count; else $ARAGORA_BENCH_REDIS_URL or {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=DEFAULT_DB,
        help="database the run owns; it must be empty or left by an earlier run (%(default)s)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny CI run: --pending 100,1000 --samples 20 --agents 10,100 --duration 1 "
        "--idle 0.5 --warmup 0.5",
    )


def _counts(text: str, option: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"{option}: expected integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{option}: every value must be at least 1")
    return values


class Context:
    """What a W4 run owns: a temporary directory, and on Redis the database and a client
    of the server for ``INFO`` and ``MEMORY USAGE``."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.db: RedisDatabase | None = None
        self.redis: Any = None
        self.redis_kind = "shared server"

    @property
    def db_url(self) -> str:
        assert self.db is not None, "no Redis database claimed"
        return self.db.url

    def fresh(self, store: str, label: str) -> tuple[ControlPlaneConfig, str]:
        """A config on a new key prefix or SQLite file, and that prefix or file path."""
        name = f"bench-w4-{label}-{uuid.uuid4().hex[:8]}"
        if store == "redis":
            prefix = f"{name}:"
            return ControlPlaneConfig(redis_url=self.db_url, key_prefix=prefix), prefix
        path = self.workdir / f"{name}.db"
        return ControlPlaneConfig(store_url=f"sqlite:///{path}"), str(path)

    async def info(self, section: str) -> dict[str, Any]:
        info: dict[str, Any] = await self.redis.info(section)
        return info


# -- (a) claim latency and (c) bytes per task ------------------------------------------
@dataclass(slots=True)
class SizeResult:
    """Claim latency with one number of pending tasks."""

    pending: int
    fill_s: float
    claim_ms: list[float] = field(default_factory=list)
    claim_complete_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ClaimResult:
    store: str
    sizes: list[SizeResult]
    memory: dict[str, Any]


async def _fill(cp: ControlPlaneCoordinator, n: int) -> tuple[float, list[str]]:
    """Submit ``n`` small tasks in batches: (seconds, a sample of their ids)."""
    sample: list[str] = []
    started = time.perf_counter()
    for start in range(0, n, FILL_BATCH):
        specs = [TaskSpec(TASK_TYPE, {"x": i}) for i in range(start, min(start + FILL_BATCH, n))]
        outcomes = await cp.submit_tasks(specs)
        for outcome in outcomes:
            if not isinstance(outcome, str):
                raise RuntimeError(f"filling the store failed: {outcome}")
        if len(sample) < MEMORY_SAMPLE_TASKS:
            sample += [str(o) for o in outcomes[: MEMORY_SAMPLE_TASKS - len(sample)]]
    return time.perf_counter() - started, sample


async def _claim_samples(cp: ControlPlaneCoordinator, agent: str, k: int, size: SizeResult) -> None:
    for _ in range(k):
        await cp.submit_task(TASK_TYPE, {"x": -1})
        started = time.perf_counter()
        task = await cp.claim_task(agent)
        claimed = time.perf_counter()
        if task is None or task.lease_token is None:
            raise RuntimeError(f"no task to claim among {size.pending} pending")
        await cp.complete_task(task.id, {"ok": True}, lease_token=task.lease_token)
        done = time.perf_counter()
        size.claim_ms.append((claimed - started) * 1000)
        size.claim_complete_ms.append((done - started) * 1000)


async def _redis_bytes(ctx: Context, prefix: str, tasks: int, sample: list[str]) -> dict[str, Any]:
    """``MEMORY USAGE`` per key kind under ``prefix`` (workspace "default"), per task."""
    base = f"{prefix}{{default}}:"
    per_hash = []
    encoding = fields = None
    for task_id in sample:
        per_hash.append(int(await ctx.redis.memory_usage(f"{base}t:{task_id}") or 0))
    if sample:
        encoding = await ctx.redis.object("encoding", f"{base}t:{sample[0]}")
        fields = await ctx.redis.hlen(f"{base}t:{sample[0]}")
    kinds: dict[str, float] = {"task hash t:<id> (mean of a sample)": sum(per_hash) / len(sample)}
    async for key in ctx.redis.scan_iter(match=f"{base}[^t]*", count=10_000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        usage = int(await ctx.redis.memory_usage(name, samples=0) or 0)
        kind = name.removeprefix(base)
        kind_type = await ctx.redis.type(name)
        kinds[f"{kind} ({kind_type.decode() if isinstance(kind_type, bytes) else kind_type})"] = (
            usage / tasks
        )
    return {
        "task_hash_encoding": encoding.decode() if isinstance(encoding, bytes) else encoding,
        "task_hash_fields": fields,
        "memory_usage_bytes_per_task": {k: round(v, 1) for k, v in kinds.items()},
        "memory_usage_total_bytes_per_task": round(sum(kinds.values()), 1),
    }


def _sqlite_bytes(path: str, tasks: int) -> dict[str, Any]:
    """File bytes per task and each table's and index's share (``dbstat``)."""
    files = [Path(path), Path(path + "-wal")]
    total = sum(f.stat().st_size for f in files if f.exists())
    shares: dict[str, float] = {}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).fetchall()
        except sqlite3.OperationalError:
            rows = []  # sqlite3 built without the dbstat table
    for name, size in rows:
        if size / tasks >= 0.5:
            shares[str(name)] = round(size / tasks, 1)
    return {
        "file_bytes": total,
        "file_bytes_per_task": round(total / tasks, 1),
        "bytes_per_task_by_table_or_index": shares,
    }


async def measure_claims(ctx: Context, store: str) -> ClaimResult:
    args = ctx.args
    small_n, large_n = _counts(args.pending, "--pending")[:2]
    small_cfg, _ = ctx.fresh(store, "small")
    large_cfg, large_where = ctx.fresh(store, "large")
    memory: dict[str, Any] = {"tasks": large_n, "payload": '{"x": <int>}'}
    async with (
        ControlPlaneCoordinator(small_cfg, run_reaper=False) as small,
        ControlPlaneCoordinator(large_cfg, run_reaper=False) as large,
    ):
        small_s, _ = await _fill(small, small_n)
        used_before = (await ctx.info("memory"))["used_memory"] if store == "redis" else 0
        large_s, sample = await _fill(large, large_n)
        print(
            f"[w4 {store}] filled {small_n:,} in {small_s:.1f}s, {large_n:,} in {large_s:.1f}s "
            f"({large_n / large_s:,.0f} tasks/s)",
            file=sys.stderr,
        )
        if store == "redis":
            used_after = (await ctx.info("memory"))["used_memory"]
            memory["used_memory_delta_bytes_per_task"] = round(
                (used_after - used_before) / large_n, 1
            )
            memory.update(await _redis_bytes(ctx, large_where, large_n, sample))
        sizes = [SizeResult(small_n, small_s), SizeResult(large_n, large_s)]
        pairs = [(small, sizes[0]), (large, sizes[1])]
        for cp, _ in pairs:
            await cp.register_agent("bench-claimer", [], AGENT_MODEL)
            await _claim_samples(cp, "bench-claimer", 5, SizeResult(0, 0.0))  # warm up
        rounds = max(1, min(args.rounds, args.samples))
        for r in range(rounds):
            k = args.samples // rounds + (1 if r < args.samples % rounds else 0)
            for cp, size in pairs if r % 2 == 0 else reversed(pairs):
                await _claim_samples(cp, "bench-claimer", k, size)
    if store == "sqlite":
        memory.update(_sqlite_bytes(large_where, large_n))
    return ClaimResult(store, sizes, memory)


# -- (b) heartbeats --------------------------------------------------------------------
class HeartbeatLoad:
    """Heartbeats of ``agents`` evenly spread over ``interval_s``, at most
    ``HEARTBEAT_IN_FLIGHT`` at once; a beat due while that many are in flight is
    counted in ``skipped`` and not sent."""

    def __init__(
        self, beat: Callable[[str], Awaitable[object]], agents: list[str], interval_s: float
    ) -> None:
        self._beat = beat
        self._agents = agents
        self._period_s = interval_s / len(agents)
        self.completed = 0
        self.errors = 0
        self.skipped = 0
        self.last_error = ""
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, agent: str) -> None:
        try:
            await self._beat(agent)
            self.completed += 1
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._in_flight -= 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while True:
            due = int((loop.time() - started) / self._period_s) + 1
            while sent < due:
                if self._in_flight >= HEARTBEAT_IN_FLIGHT:
                    self.skipped += 1
                else:
                    self._in_flight += 1
                    task = asyncio.create_task(self._one(self._agents[sent % len(self._agents)]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                sent += 1
            await asyncio.sleep(LOAD_TICK_S)  # the next beats fall due

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Reading:
    """Counters at one instant: time, CPU seconds and Redis commands so far."""

    at_s: float
    server_cpu_s: float | None
    redis_cpu_s: float | None
    redis_commands: int | None
    own_cpu_s: float
    completed: int = 0


@dataclass(frozen=True, slots=True)
class Window:
    seconds: float
    beats: int
    server_cpu_s: float | None
    redis_cpu_s: float | None
    redis_commands: int | None
    own_cpu_s: float

    @classmethod
    def between(cls, a: Reading, b: Reading) -> Window:
        def delta(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None else y - x

        commands = delta(a.redis_commands, b.redis_commands)
        return cls(
            b.at_s - a.at_s,
            b.completed - a.completed,
            delta(a.server_cpu_s, b.server_cpu_s),
            delta(a.redis_cpu_s, b.redis_cpu_s),
            None if commands is None else int(commands),
            b.own_cpu_s - a.own_cpu_s,
        )

    def pct(self, cpu_s: float | None) -> float | None:
        return None if cpu_s is None else cpu_s / self.seconds * 100


@dataclass(slots=True)
class HeartbeatResult:
    store: str
    path: str
    agents: int
    interval_s: float
    register_s: float
    idle: Window
    load: Window
    errors: int
    skipped: int
    last_error: str

    @property
    def target_per_s(self) -> float:
        return self.agents / self.interval_s

    @property
    def per_s(self) -> float:
        return self.load.beats / self.load.seconds

    def net_pct(self, what: str) -> float | None:
        """Load minus idle floor, % of one core, for ``server``, ``redis`` or ``own``."""
        load = self.load.pct(getattr(self.load, f"{what}_cpu_s"))
        idle = self.idle.pct(getattr(self.idle, f"{what}_cpu_s"))
        return None if load is None or idle is None else load - idle

    def us_per_beat(self, what: str) -> float | None:
        net = self.net_pct(what)
        return None if net is None or not self.per_s else net / 100 / self.per_s * 1e6

    def commands_per_s(self) -> float | None:
        if self.load.redis_commands is None or self.idle.redis_commands is None:
            return None
        return (
            self.load.redis_commands / self.load.seconds
            - self.idle.redis_commands / self.idle.seconds
        )

    def commands_per_beat(self) -> float | None:
        """Redis commands (those run inside scripts included) per heartbeat, net of idle."""
        per_s = self.commands_per_s()
        return None if per_s is None or not self.per_s else per_s / self.per_s

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "path": self.path,
            "agents": self.agents,
            "interval_s": self.interval_s,
            "target_heartbeats_per_s": self.target_per_s,
            "heartbeats_per_s": round(self.per_s, 1),
            "register_s": round(self.register_s, 2),
            "errors": self.errors,
            "skipped": self.skipped,
            "last_error": self.last_error,
            "idle": asdict(self.idle),
            "load": asdict(self.load),
            "server_cpu_pct_net": self.net_pct("server"),
            "redis_cpu_pct_net": self.net_pct("redis"),
            "generator_cpu_pct": self.load.pct(self.load.own_cpu_s),
            "redis_commands_per_s_net": self.commands_per_s(),
        }


class Target:
    """The heartbeat target of one measurement: how to register, beat and read CPU."""

    def __init__(
        self,
        register: Callable[[str], Awaitable[object]],
        beat: Callable[[str], Awaitable[object]],
        server_cpu: Callable[[], float | None],
    ) -> None:
        self.register = register
        self.beat = beat
        self.server_cpu = server_cpu


@contextlib.asynccontextmanager
async def _target(ctx: Context, store: str, path: str) -> AsyncIterator[Target]:
    config, _ = ctx.fresh(store, "hb")
    if path == "library":
        # With SQLite the store lives in this process, so its CPU is the "server" here.
        server_cpu = own_cpu_s if store == "sqlite" else (lambda: None)
        async with ControlPlaneCoordinator(config, run_reaper=False) as cp:

            async def register(agent: str) -> object:
                return await cp.register_agent(agent, [], AGENT_MODEL)

            async def beat(agent: str) -> object:
                return await cp.heartbeat(agent)

            yield Target(register, beat, server_cpu)
        return
    store_url = ctx.db_url if store == "redis" else None
    server = ServerProcess(ctx.workdir / uuid.uuid4().hex[:8], store_url, config.key_prefix)
    async with server, AsyncControlPlaneClient(server.url, server.token) as client:
        await client.update_workspace("default", quotas={"max_agents": None})

        async def register_http(agent: str) -> object:
            return await client.register_agent(agent, [], AGENT_MODEL)

        async def beat_http(agent: str) -> object:
            return await client.heartbeat(agent)

        yield Target(register_http, beat_http, server.cpu_s)


async def _read(ctx: Context, store: str, target: Target, completed: int = 0) -> Reading:
    redis_cpu = commands = None
    if store == "redis":
        redis_cpu = await redis_cpu_s(ctx.redis)
        commands = int((await ctx.info("stats"))["total_commands_processed"])
    return Reading(
        time.monotonic(), target.server_cpu(), redis_cpu, commands, own_cpu_s(), completed
    )


async def _register_all(target: Target, agents: list[str]) -> None:
    queue = iter(agents)

    async def worker() -> None:
        for agent in queue:
            await target.register(agent)

    await asyncio.gather(*(worker() for _ in range(REGISTER_CONCURRENCY)))


async def measure_heartbeats(ctx: Context, store: str, path: str, n: int) -> HeartbeatResult:
    args = ctx.args
    interval_s = ControlPlaneConfig().heartbeat_interval
    if ctx.db is not None:
        ctx.db.flush()
    async with _target(ctx, store, path) as target:
        before_idle = await _read(ctx, store, target)
        await asyncio.sleep(args.idle)  # the idle floor
        idle = Window.between(before_idle, await _read(ctx, store, target))
        agents = [f"hb-agent-{i}" for i in range(n)]
        started = time.monotonic()
        await _register_all(target, agents)
        register_s = time.monotonic() - started
        load = HeartbeatLoad(target.beat, agents, interval_s)
        driver = asyncio.create_task(load.run())
        try:
            await asyncio.sleep(args.warmup)
            first = await _read(ctx, store, target, load.completed)
            await asyncio.sleep(args.duration)  # the measured window
            window = Window.between(first, await _read(ctx, store, target, load.completed))
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
            await load.drain()
    return HeartbeatResult(
        store,
        path,
        n,
        interval_s,
        register_s,
        idle,
        window,
        load.errors,
        load.skipped,
        load.last_error,
    )


# -- tables -----------------------------------------------------------------------------
def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _ratio_cells(small: SizeResult, large: SizeResult) -> list[str]:
    cells = []
    for attr in ("claim_ms", "claim_complete_ms"):
        for q in (50, 99):
            value = percentile(getattr(large, attr), q) / percentile(getattr(small, attr), q)
            cells.append(f"**{value:.2f}**")
    return cells


def claims_table(results: list[ClaimResult]) -> str:
    rows = []
    for r in results:
        for size in r.sizes:
            rows.append(
                [
                    r.store,
                    f"{size.pending:,}",
                    f"{size.pending / size.fill_s:,.0f}",
                    f"{percentile(size.claim_ms, 50):.3f}",
                    f"{percentile(size.claim_ms, 99):.3f}",
                    f"{percentile(size.claim_complete_ms, 50):.3f}",
                    f"{percentile(size.claim_complete_ms, 99):.3f}",
                ]
            )
        rows.append([r.store, "LARGE ÷ SMALL", "", *_ratio_cells(*r.sizes)])
    header = [
        "store",
        "pending",
        "fill tasks/s",
        "claim p50 ms",
        "claim p99 ms",
        "claim + complete p50 ms",
        "claim + complete p99 ms",
    ]
    return report.markdown_table(header, rows, right=1)


def memory_table(results: list[ClaimResult]) -> str:
    rows = []
    for r in results:
        m = r.memory
        if r.store == "redis":
            rows.append(
                [
                    r.store,
                    "used_memory delta ÷ tasks",
                    f"{m['used_memory_delta_bytes_per_task']:,.0f}",
                ]
            )
            for kind, value in m["memory_usage_bytes_per_task"].items():
                rows.append([r.store, f"MEMORY USAGE: {kind}", f"{value:,.1f}"])
            rows.append(
                [r.store, "MEMORY USAGE: sum", f"{m['memory_usage_total_bytes_per_task']:,.0f}"]
            )
        else:
            rows.append([r.store, "file (+ WAL) ÷ tasks", f"{m['file_bytes_per_task']:,.0f}"])
            for name, value in m["bytes_per_task_by_table_or_index"].items():
                rows.append([r.store, f"dbstat: {name}", f"{value:,.1f}"])
    return report.markdown_table(["store", "what", "bytes per pending task"], rows, right=2)


def heartbeat_table(results: list[HeartbeatResult]) -> str:
    rows = []
    for r in results:
        server_net, redis_net = r.net_pct("server"), r.net_pct("redis")
        counted = [v for v in (server_net, redis_net) if v is not None]
        total = sum(counted) if counted else None
        scale = r.target_per_s / r.per_s if r.per_s else None
        projected = None if total is None or scale is None else total * scale
        rows.append(
            [
                r.store,
                r.path,
                f"{r.agents:,}",
                f"{r.target_per_s:,.0f}",
                f"{r.per_s:,.0f}" + (f" ({r.errors} errors)" if r.errors else ""),
                _num(r.commands_per_s(), ",.0f"),
                _num(r.commands_per_beat(), ".1f"),
                _num(server_net, ".1f"),
                _num(redis_net, ".1f"),
                _num(total, ".1f"),
                _num(projected, ".1f"),
                _num(r.us_per_beat("server"), ",.0f"),
                _num(r.us_per_beat("redis"), ",.0f"),
                _num(r.load.pct(r.load.own_cpu_s), ".0f"),
            ]
        )
    header = [
        "store",
        "path",
        "agents",
        "target beats/s",
        "beats/s",
        "Redis commands/s (net)",
        "per beat",
        "server CPU % (net)",
        "Redis CPU % (net)",
        "total % of one core",
        "at target rate",
        "server µs/beat",
        "Redis µs/beat",
        "generator CPU % (not counted)",
    ]
    return report.markdown_table(header, rows, right=2)


# -- main -------------------------------------------------------------------------------
async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stores = STORES if args.store == "both" else (args.store,)
    parts = PARTS if args.part == "all" else (args.part,)
    paths = [p.strip().lower() for p in args.paths.split(",") if p.strip()]
    if not set(paths) <= {"library", "http"}:
        raise SystemExit(f"--paths: expected library and/or http, got {args.paths!r}")
    ctx = Context(args, workdir)
    async with contextlib.AsyncExitStack() as stack:
        if "redis" in stores:
            redis_url = args.redis_url
            if redis_url is None and shutil.which("redis-server"):
                private = RedisServerProcess(workdir / "redis")
                redis_url = (await stack.enter_async_context(private)).url
                ctx.redis_kind = "private redis-server"
            elif redis_url is None:
                redis_url = os.environ.get("ARAGORA_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
            ctx.db = RedisDatabase(redis_url, args.redis_db)
            ctx.db.claim()
            ctx.redis = aioredis.Redis.from_url(ctx.db.url)
        return await _measure_all(ctx, stores, parts, paths)


async def _measure_all(
    ctx: Context, stores: tuple[str, ...], parts: tuple[str, ...], paths: list[str]
) -> dict[str, Any]:
    args = ctx.args
    claims: list[ClaimResult] = []
    beats: list[HeartbeatResult] = []
    try:
        meta = {"redis": "-"}
        if ctx.redis is not None:
            meta["redis"] = f"{(await ctx.info('server'))['redis_version']} ({ctx.redis_kind})"
        for store in stores:
            if "claims" in parts:
                claims.append(await measure_claims(ctx, store))
                if ctx.db is not None:
                    ctx.db.flush()
            if "heartbeats" in parts:
                for path in paths:
                    for n in _counts(args.agents, "--agents"):
                        result = await measure_heartbeats(ctx, store, path, n)
                        print(
                            f"[w4 {store} {path}] {n:,} agents: {result.per_s:,.0f} beats/s",
                            file=sys.stderr,
                        )
                        beats.append(result)
    finally:
        if ctx.redis is not None:
            await ctx.redis.aclose()
        if ctx.db is not None:
            ctx.db.release()
    return {"meta": meta, "claims": claims, "heartbeats": beats}


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup: servers, databases


def main(args: argparse.Namespace) -> int:
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    if len(_counts(args.pending, "--pending")) != 2:
        raise SystemExit("--pending: give two counts, SMALL,LARGE")
    if args.samples < 1 or args.rounds < 1 or args.duration <= 0 or args.idle <= 0:
        raise SystemExit("--samples and --rounds must be at least 1, --duration and --idle > 0")
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminated)
    with tempfile.TemporaryDirectory(prefix="aragora-bench-w4-") as tmp:
        results = asyncio.run(_run(args, Path(tmp)))
    claims: list[ClaimResult] = results["claims"]
    beats: list[HeartbeatResult] = results["heartbeats"]
    meta = {
        "aragora": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "redis": results["meta"]["redis"],
        "pending": args.pending,
        "samples": args.samples,
        "rounds": args.rounds,
        "agents": args.agents,
        "heartbeat_interval_s": ControlPlaneConfig().heartbeat_interval,
        "duration_s": args.duration,
        "idle_s": args.idle,
        "warmup_s": args.warmup,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(
        f"W4 scale (Python {meta['python']}, {meta['platform']}, {meta['cpus']} CPUs, "
        f"Redis {meta['redis']}).\n"
    )
    if claims:
        print(f"Claim latency, {args.samples} samples per size in {args.rounds} rounds.\n")
        print(claims_table(claims))
        print('\nBytes per pending task (payload {"x": <int>}).\n')
        print(memory_table(claims))
        print()
    if beats:
        print(
            f"Heartbeats at the default interval ({meta['heartbeat_interval_s']:g} s), "
            f"{args.duration:g} s of load after {args.warmup:g} s, idle floor {args.idle:g} s; "
            "CPU as % of one core.\n"
        )
        print(heartbeat_table(beats))
    if args.json_out is not None:
        document = {
            "meta": meta,
            "claims": [
                {
                    "store": c.store,
                    "sizes": [
                        {
                            "pending": s.pending,
                            "fill_s": round(s.fill_s, 2),
                            "claim_p50_ms": percentile(s.claim_ms, 50),
                            "claim_p99_ms": percentile(s.claim_ms, 99),
                            "claim_complete_p50_ms": percentile(s.claim_complete_ms, 50),
                            "claim_complete_p99_ms": percentile(s.claim_complete_ms, 99),
                        }
                        for s in c.sizes
                    ],
                    "memory": c.memory,
                }
                for c in claims
            ],
            "heartbeats": [b.to_json() for b in beats],
        }
        report.write_document(args.json_out, document)
    return 0
