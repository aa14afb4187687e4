"""Our control plane against peer task queues, side by side in one run on one Redis.

Systems: our control plane on Redis and on SQLite (``aragora-redis``,
``aragora-sqlite``) and the peers celery, rq, arq, saq, taskiq (taskiq-redis), dramatiq
and huey, each behind a small adapter in ``bench/peers/<name>.py`` whose docstring gives
its worker configuration. Every system runs ONE worker process; the async peers keep
~100 jobs in flight (arq max_jobs=100, saq concurrency=100, taskiq's default receiver),
celery runs --pool=solo, rq one rq.Worker, dramatiq one process with its default 8
threads, huey one consumer with one worker thread, and ours one agent with one claim
loop, again with 4 concurrent claim loops (``--agent-slots``, default "1,4"), and
with the batch API, 100 tasks per claim_tasks/complete_tasks (``--agent-batch``).
Results go through each system's own result backend on the same Redis server. Each
Redis system gets a database of its own (``--redis-db-first`` and up: aragora-redis,
then the peers in the order above), which the run marks as its own, flushes before
each repeat and at the end, and refuses to touch if it holds keys the benchmark did
not create.

Workloads (see ``bench/workloads.py`` for the exact definitions):

* W1 throughput: ``--tasks`` tasks (default 5000) submitted while no worker runs,
  then the worker drains them; tasks/s from the worker's start ("go") until the
  producer has fetched every result. For a long run use ``--tasks 50000 --timeout
  600`` (rq drains about 150 tasks/s, so leave it out or allow it ~6 min per run).
* W2 latency: the warm, idle worker; one task at a time, submit -> result,
  ``--latency-samples`` times (default 300); p50 and p99 in ms.
* W5 mix (ours only, both stores): 8 agents with overlapping capabilities, 16
  capability sets, 4 priorities; throughput, and whether priority order (per agent),
  FIFO per queue and capability routing held.

Each system is measured ``--repeat`` times (default 3), round-robin over the systems;
the tables show medians (range of the repeats in brackets) and the ratio to the best
peer of this run. A system that cannot be imported or started is reported as
"unavailable (reason)", one that fails mid-run as "failed (reason)"; the run goes on.
Every phase is bounded by ``--timeout`` (default 120 s); every worker process is
killed at the end. ``--smoke`` is a tiny run (ours and one peer, one repeat) for CI.
``--profile DIR`` first runs each of our rows once more with W1 under pyinstrument
(worker and producer) and writes the reports there; those runs are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import report, workloads
from bench.peers import OURS, PEERS, SYSTEMS, load_adapter
from bench.peers.aragora import mix_options
from bench.peers.base import (
    REPO_ROOT,
    STOP_GRACE_S,
    Adapter,
    Settings,
    Unavailable,
    child_env,
    import_peer,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_DB_FIRST = 8
MARKER_KEY = "aragora-bench:peers:owner"
SMOKE_PEER = "huey"
SMOKE_TASKS = 200
SMOKE_SAMPLES = 30
REDIS_SYSTEMS = ("aragora-redis", *PEERS)
WORKER_START_S = 60.0
PROCESS_OVERHEAD_S = 60.0
"""Allowance for a producer process to start, stop its worker and exit."""


class RedisDatabase:
    """One Redis database the benchmark owns for the length of the run.

    ``claim`` accepts an empty database or one holding ``MARKER_KEY`` (left by an
    earlier run of this benchmark), flushes it and sets the marker; anything else is
    refused. ``flush`` empties it (and sets the marker again); ``release`` empties it.
    """

    def __init__(self, base_url: str, db: int) -> None:
        parts = urlsplit(base_url)
        self.db = db
        self.url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
        self._client: Any = None
        self.claimed = False

    def claim(self) -> None:
        self._client = import_peer("redis").Redis.from_url(self.url)
        keys = int(self._client.dbsize())
        if keys and not self._client.exists(MARKER_KEY):
            raise Unavailable(
                f"redis db {self.db} holds {keys} keys this benchmark did not create; "
                "choose other databases with --redis-db-first"
            )
        self.claimed = True
        self.flush()

    def flush(self) -> None:
        if self.claimed:
            self._client.flushdb()
            self._client.set(MARKER_KEY, "python -m bench peers")

    def release(self) -> None:
        if self._client is None:
            return
        if self.claimed:
            self._client.flushdb()
        self._client.close()
        self._client = None
        self.claimed = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=5000, help="W1 and W5 tasks (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each system (%(default)s)")
    parser.add_argument(
        "--latency-samples", type=int, default=300, help="W2 samples per run (%(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per workload phase (%(default)s)"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated systems to measure (default: all: %(default)s)",
    )
    parser.add_argument("--no-mix", action="store_true", help="skip W5")
    parser.add_argument(
        "--agent-slots",
        default="1,4",
        help="claim loops of our W1/W2 worker agent; a comma-separated list gives one row "
        "per value (%(default)s)",
    )
    parser.add_argument(
        "--agent-batch",
        type=int,
        default=100,
        help="also measure our worker with the batch API, this many tasks per claim "
        "(0 or 1: no such row; %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("ARAGORA_BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis server, without a database number (default: $ARAGORA_BENCH_REDIS_URL "
        f"or {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--redis-db-first",
        type=int,
        default=DEFAULT_DB_FIRST,
        help=f"first of the {len(REDIS_SYSTEMS)} databases used (%(default)s)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny CI run: {SMOKE_TASKS} tasks, {SMOKE_SAMPLES} samples, one repeat, "
        f"ours (one claim loop, and batches) and {SMOKE_PEER} (or the first peer of --systems)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also profile our rows' W1 with pyinstrument (extra runs, not counted)",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="keep worker logs here (default: a temporary directory)"
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the W1/W2 table: a system, and for ours the number of claim loops."""

    label: str
    system: str
    slots: int = 1
    batch: int = 1


def _rows(args: argparse.Namespace) -> list[Row]:
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    if args.smoke:
        peers = [n for n in names if n in PEERS]
        peers = [SMOKE_PEER] if SMOKE_PEER in peers else peers[:1]
        names = [n for n in names if n in OURS] + peers
    rows = []
    for name in names:
        if name not in OURS:
            rows.append(Row(name, name))
            continue
        for slots in [1] if args.smoke else args.slots:
            rows.append(Row(name if slots == 1 else f"{name} ({slots} loops)", name, slots))
        if args.agent_batch > 1:
            rows.append(Row(f"{name} (batches of {args.agent_batch})", name, 1, args.agent_batch))
    return rows


def _parse_slots(text: str) -> list[int]:
    try:
        slots = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"--agent-slots: expected integers, got {text!r}") from None
    if not slots or slots[0] < 1:
        raise SystemExit("--agent-slots: every value must be at least 1")
    return slots


def _slug(label: str) -> str:
    """``aragora-redis (4 loops)`` -> ``aragora-redis-4-loops``, for file names."""
    return "-".join(label.replace("(", " ").replace(")", " ").split())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Unavailable):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:300].replace("|", "/")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a producer process reported: RESULT (with data), UNAVAILABLE or FAILED."""

    kind: str
    data: Any = None
    reason: str = ""


def run_producer(job: dict[str, Any], log_path: Path, budget_s: float) -> Outcome:
    """Run one measurement in a producer process (``bench.peers.producer``).

    The process gets ``budget_s`` in all; past that, the worker's process group (whose
    pid the producer reported and has not reaped, so it cannot have been reused) and
    then the producer's are killed, and the outcome is FAILED."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peers.producer", json.dumps(job)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env=child_env(),
            start_new_session=True,
        )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + budget_s
    buffer = b""
    worker_pid: int | None = None
    outcome: Outcome | None = None
    timed_out = False
    try:
        while outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = Outcome("FAILED", reason=f"no result within {budget_s:.0f}s")
                timed_out = True  # killed below, without waiting
                break
            readable, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not readable:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = proc.wait(timeout=STOP_GRACE_S)
                outcome = Outcome("FAILED", reason=f"producer exited with {code}")
                break
            buffer += chunk
            while b"\n" in buffer and outcome is None:
                line, buffer = buffer.split(b"\n", 1)
                kind, _, rest = line.decode().partition(" ")
                if kind == "WORKER":
                    worker_pid = int(rest)
                elif kind == "RESULT":
                    outcome = Outcome(kind, json.loads(rest))
                elif kind in ("UNAVAILABLE", "FAILED"):
                    outcome = Outcome(kind, reason=rest)
        if not timed_out:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3 * STOP_GRACE_S)  # it stops its worker, then exits
    finally:
        if proc.poll() is None:
            if worker_pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    return outcome


class Runner:
    """Runs the rows round-robin, ``--repeat`` times, then W5; owns the Redis databases.

    Each measurement runs in a producer process of its own (see ``run_producer``)."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.log_dir: Path = args.log_dir or workdir
        self.dbs: dict[str, RedisDatabase] = {}
        self.classes: dict[str, type[Adapter]] = {}
        self.unavailable: dict[str, str] = {}
        self.results: dict[Row, report.SystemResult] = {}
        self.mixes: dict[str, report.MixResult] = {}

    def _prepare(self, name: str) -> None:
        """Import the adapter and claim the system's database, once per system."""
        if name in self.classes or name in self.unavailable:
            return
        try:
            cls = load_adapter(name)
            cls.check()
            if name in REDIS_SYSTEMS:
                db_number = self.args.redis_db_first + REDIS_SYSTEMS.index(name)
                self.dbs[name] = db = RedisDatabase(self.args.redis_url, db_number)
                db.claim()
        except Exception as exc:
            self.unavailable[name] = f"unavailable ({_reason(exc)})"
            return
        self.classes[name] = cls

    def _job(self, kind: str, name: str, options: dict[str, Any], log_stem: str) -> dict[str, Any]:
        namespace = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        options = dict(options)
        if name in OURS:
            options["store"] = name.removeprefix("aragora-")
            options["sqlite_path"] = str(self.workdir / f"{namespace}.db")
        db = self.dbs.get(name)
        if db is not None:
            db.flush()
        settings = Settings(name, db.url if db else self.args.redis_url, namespace, options)
        return {
            "kind": kind,
            "settings": asdict(settings),
            "log_path": str(self.log_dir / f"{log_stem}-worker.log"),
            "redis_url": self.args.redis_url,
            "tasks": self.args.tasks,
            "samples": self.args.latency_samples,
            "timeout_s": self.args.timeout,
        }

    def run(self) -> None:
        rows = _rows(self.args)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.args.profile is not None:
            self.args.profile.mkdir(parents=True, exist_ok=True)
        for row in rows:
            self._prepare(row.system)
            cls = self.classes.get(row.system) or load_adapter(row.system)
            result = report.SystemResult(
                row.label,
                cls.version(),
                cls.describe_worker({"slots": row.slots, "batch": row.batch}),
                row.system in PEERS,
            )
            result.status = self.unavailable.get(row.system, "ok")
            self.results[row] = result
        if not self.args.no_mix:
            for name in OURS:
                if name in self.classes:
                    self.mixes[name] = report.MixResult(name.removeprefix("aragora-"), 0)
        try:
            if self.args.profile is not None:
                for row, result in self.results.items():
                    if result.status == "ok" and row.system in OURS:
                        self._profile(row)
            for run in range(self.args.repeat):
                for row, result in self.results.items():
                    if result.status == "ok":
                        self._measure(row, result, run)
                for name, mix in self.mixes.items():
                    if mix.status == "ok":
                        self._measure_mix(name, mix, run)
        finally:
            for db in self.dbs.values():
                try:
                    db.release()
                except Exception as exc:
                    print(f"could not release redis db {db.db}: {_reason(exc)}", file=sys.stderr)

    def _profile(self, row: Row) -> None:
        """One uncounted W1 + W2 of our row with W1 under pyinstrument on both sides."""
        stem = self.args.profile / _slug(row.label)
        options: dict[str, Any] = {"slots": row.slots, "batch": row.batch}
        options["profile_path"] = f"{stem}-w1-worker.txt"
        job = self._job("w1w2", row.system, options, f"{_slug(row.label)}-profile")
        job["profile_path"] = f"{stem}-w1-producer.txt"
        budget_s = 3 * self.args.timeout + WORKER_START_S + PROCESS_OVERHEAD_S
        outcome = run_producer(job, self.log_dir / f"{_slug(row.label)}-profile.log", budget_s)
        state = "written" if outcome.kind == "RESULT" else f"{outcome.kind}: {outcome.reason}"
        print(f"[profile] {row.label}: {stem}-w1-*.txt {state}", file=sys.stderr)

    def _measure(self, row: Row, result: report.SystemResult, run: int) -> None:
        args = self.args
        stem = f"{_slug(row.label)}-{run}"
        options: dict[str, Any] = {"slots": row.slots, "batch": row.batch}
        job = self._job("w1w2", row.system, options, stem)
        started = time.monotonic()
        # submit + worker start + drain + latency, each bounded; then start-up and stop
        budget_s = 3 * args.timeout + WORKER_START_S + PROCESS_OVERHEAD_S
        outcome = run_producer(job, self.log_dir / f"{stem}-producer.log", budget_s)
        if outcome.kind != "RESULT":
            result.status = f"{outcome.kind.lower()} ({outcome.reason[:300].replace('|', '/')})"
            print(f"[run {run + 1}/{args.repeat}] {row.label}: {result.status}", file=sys.stderr)
            return
        w1 = workloads.Throughput(**outcome.data["w1"])
        result.add_throughput(w1)
        result.add_latency(outcome.data["latency_s"])
        print(
            f"[run {run + 1}/{args.repeat}] {row.label}: {w1.tasks_per_s:,.0f} tasks/s, "
            f"p50 {result.p50_ms[-1]:.2f} ms, p99 {result.p99_ms[-1]:.2f} ms "
            f"({time.monotonic() - started:.1f}s)",
            file=sys.stderr,
        )

    def _measure_mix(self, name: str, mix: report.MixResult, run: int) -> None:
        job = self._job("mix", name, mix_options(workloads.mix_agents()), f"{name}-mix-{run}")
        budget_s = 2 * self.args.timeout + WORKER_START_S + PROCESS_OVERHEAD_S
        outcome = run_producer(job, self.log_dir / f"{name}-mix-{run}-producer.log", budget_s)
        mix.tasks = self.args.tasks
        if outcome.kind != "RESULT":
            mix.status = f"{outcome.kind.lower()} ({outcome.reason[:300].replace('|', '/')})"
            print(
                f"[run {run + 1}/{self.args.repeat}] W5 {mix.store}: {mix.status}", file=sys.stderr
            )
            return
        check = workloads.MixCheck(**outcome.data["check"])
        mix.tasks_per_s.append(outcome.data["tasks_per_s"])
        mix.checks.append(check)
        print(
            f"[run {run + 1}/{self.args.repeat}] W5 {mix.store}: "
            f"{outcome.data['tasks_per_s']:,.0f} tasks/s, {'held' if check.held else 'VIOLATED'}",
            file=sys.stderr,
        )


def _redis_version(url: str) -> str:
    try:
        client = import_peer("redis").Redis.from_url(url)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
    except Exception as exc:
        return f"unreachable ({_reason(exc)})"


def main(args: argparse.Namespace) -> int:
    if args.smoke:
        args.tasks, args.repeat, args.latency_samples = SMOKE_TASKS, 1, SMOKE_SAMPLES
    if args.tasks < 1 or args.repeat < 1 or args.latency_samples < 1:
        raise SystemExit("--tasks, --repeat and --latency-samples must be at least 1")
    args.slots = _parse_slots(args.agent_slots)
    if not 0 <= args.redis_db_first <= 16 - len(REDIS_SYSTEMS):
        raise SystemExit(f"--redis-db-first must leave room for {len(REDIS_SYSTEMS)} databases")
    started = time.monotonic()

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every cleanup below

    signal.signal(signal.SIGTERM, terminated)
    with tempfile.TemporaryDirectory(prefix="aragora-bench-peers-") as tmp:
        runner = Runner(args, Path(tmp))
        runner.run()
    results, mixes = list(runner.results.values()), list(runner.mixes.values())
    meta = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "redis": _redis_version(args.redis_url),
        "tasks": args.tasks,
        "repeat": args.repeat,
        "latency_samples": args.latency_samples,
        "agent_slots": args.slots,
        "agent_batch": args.agent_batch,
        "timeout_s": args.timeout,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(
        f"Peer comparison: {args.tasks} tasks (W1), {args.latency_samples} latency samples "
        f"(W2), median of {args.repeat} run(s); one worker process per system; Python "
        f"{meta['python']}, {meta['platform']}, {meta['cpus']} CPUs, Redis {meta['redis']}.\n"
    )
    print(report.peer_table(results))
    print()
    print(report.worker_table(results))
    if mixes:
        print(f"\nW5 mix: {workloads.MIX_AGENTS} agents, 16 capability sets, 4 priorities.\n")
        print(report.mix_table(mixes, results))
    if args.json_out is not None:
        report.write_json(args.json_out, meta, results, mixes)
    return 0
