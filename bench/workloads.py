"""The workloads of the peer comparison, each measured the same way for every system.

Every workload runs against an ``Adapter`` (``bench.peers.base``): a producer process
(``bench.peers.producer``, which runs the functions below) and ONE worker process, both
on the same local Redis (each system in a database of its own) or, for our SQLite
store, on one file. The task is the same no-op everywhere: ``add_one(x: int) -> x + 1``;
every result is fetched and checked.

W1 throughput
    N tasks are submitted (not timed) while no worker runs. Then the worker process is
    started: it imports its library and builds its objects, reports ready, and waits
    for "go". The clock starts at "go" and stops when the producer has fetched the
    result of every task, in submit order, through the system's own result API.
    tasks/s = N / that time. It thus covers the worker's start (connecting, consumer
    setup), dequeueing, running, storing results, and fetching them. Over the same
    interval the CPU time (user + system) of the worker process (and any children it
    reaped, e.g. rq's work horses), of the producer process and of the Redis
    server (``INFO cpu``: server-wide, so other clients of the server count too) is
    taken and reported per task: what each task costs, whatever the wall time.

W2 latency
    The same worker, warm and idle after W1. One task at a time: submit, then wait
    for its result; the time from before the submit until the result is in hand, over
    ``samples`` tasks after ``LATENCY_WARMUP`` unrecorded ones. p50 and p99 (nearest
    rank) in ms.

W5 mix (our control plane only)
    ``MIX_AGENTS`` agents in one worker process (one coordinator, one claim loop each,
    one slot each) with overlapping capabilities (``MIX_AGENT_CAPS``) over the 16
    capability sets of four capabilities; N tasks with required capabilities and
    priority drawn from a seeded generator (each of the 16 sets and 4 priorities).
    All tasks are pending before the agents start; throughput is measured as in W1.

    Priority check. No task fails or is retried, so every task is pending from its
    submit until its claim, and the set of pending tasks an agent may run only
    shrinks. For each agent the priority ranks of its claims, in its own claim order
    (the worker numbers them), must never decrease: a claim of rank r after a claim
    of rank r' > r would mean the agent took the rank-r' task while the rank-r task,
    which it could run and which had been pending since its submit, was still waiting.
    Counted as the claims whose rank is above (higher tier than) the lowest tier that
    agent had already claimed. FIFO check: for each agent and each queue (priority,
    capability set), the submit order of the tasks it claimed must increase. Routing
    check: every task went to an agent holding all its required capabilities.

Every phase is bounded in time (``timeout_s``, the per-workload timeout) and in count;
a result wait is split into short waits so a dead worker is noticed.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers.aragora import AragoraAdapter
from bench.peers.base import Adapter, WorkerProcess, import_peer

LATENCY_WARMUP = 10
IDLE_BEFORE_LATENCY_S = 0.5
RESULT_WAIT_CHUNK_S = 2.0
WORKER_START_TIMEOUT_S = 60.0

MIX_CAPABILITIES = ("c0", "c1", "c2", "c3")
MIX_AGENT_CAPS = (0b1111, 0b0111, 0b1110, 0b1101, 0b1011, 0b0011, 0b1100, 0b0110)
"""Capability bit masks of the W5 agents: one holds all four, the others overlap."""
MIX_AGENTS = len(MIX_AGENT_CAPS)
MIX_PRIORITIES = 4
MIX_SEED = 20240501


class WorkloadTimeout(Exception):
    """A phase did not finish within the per-workload timeout."""


class WrongResult(Exception):
    """A task's result is not ``x + 1``."""


class Deadline:
    def __init__(self, timeout_s: float, what: str) -> None:
        self.timeout_s = timeout_s
        self.what = what
        self._end = time.monotonic() + timeout_s

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise WorkloadTimeout(f"{self.what} took longer than {self.timeout_s:g}s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 100]."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def fetch(adapter: Adapter, worker: WorkerProcess, handle: Any, deadline: Deadline) -> Any:
    """The result for ``handle``, waiting in short slices while the worker lives."""
    while True:
        deadline.check()
        try:
            return await adapter.result(handle, min(RESULT_WAIT_CHUNK_S, deadline.remaining()))
        except TimeoutError:
            worker.check_alive()


async def submit_all(adapter: Adapter, n: int, timeout_s: float) -> list[Any]:
    deadline = Deadline(timeout_s, f"submitting {n} tasks")
    handles = []
    for i in range(n):
        if i % 100 == 0:
            deadline.check()
        handles.append(await adapter.submit(i))
    return handles


async def drain(
    adapter: Adapter, worker: WorkerProcess, handles: list[Any], timeout_s: float
) -> tuple[float, list[Any]]:
    """Start the (ready) worker and fetch every result in submit order: (seconds, results)."""
    deadline = Deadline(timeout_s, f"draining {len(handles)} tasks")
    started = time.perf_counter()
    worker.go()
    results = [await fetch(adapter, worker, handle, deadline) for handle in handles]
    return time.perf_counter() - started, results


@dataclass(frozen=True, slots=True)
class Throughput:
    """One W1 measurement: wall time and the CPU seconds spent meanwhile."""

    tasks: int
    seconds: float
    worker_cpu_s: float | None
    producer_cpu_s: float
    redis_cpu_s: float | None

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds


def _process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


async def throughput(
    adapter: Adapter,
    worker: WorkerProcess,
    n: int,
    timeout_s: float,
    profile: str | None = None,
    redis_cpu: Callable[[], float | None] = lambda: None,
) -> Throughput:
    """W1 (see the module docstring); ``redis_cpu`` reads the server's CPU seconds.

    With ``profile`` (a file path) the producer's fetch phase runs under pyinstrument."""
    handles = await submit_all(adapter, n, timeout_s)
    worker.start(min(WORKER_START_TIMEOUT_S, timeout_s))
    before = (worker.cpu_seconds(), _process_cpu_s(), redis_cpu())
    profiler: Any = None
    if profile is not None:
        profiler = import_peer("pyinstrument").Profiler()
        profiler.start()
    try:
        seconds, results = await drain(adapter, worker, handles, timeout_s)
        after = (worker.cpu_seconds(), _process_cpu_s(), redis_cpu())
    finally:
        if profiler is not None and profile is not None:
            profiler.stop()
            text = profiler.output_text(unicode=True, color=False)
            await asyncio.to_thread(Path(profile).write_text, text)
    for i, value in enumerate(results):
        if value != i + 1:
            raise WrongResult(f"task {i} returned {value!r}, expected {i + 1}")
    return Throughput(
        n,
        seconds,
        _delta(after[0], before[0]),
        after[1] - before[1],
        _delta(after[2], before[2]),
    )


async def latency(
    adapter: Adapter, worker: WorkerProcess, samples: int, timeout_s: float
) -> list[float]:
    """W2: seconds from submit to result in hand, one task at a time, warm idle worker."""
    await asyncio.sleep(IDLE_BEFORE_LATENCY_S)  # let the worker go idle after W1
    deadline = Deadline(timeout_s, f"{samples} latency samples")
    recorded: list[float] = []
    for k in range(LATENCY_WARMUP + samples):
        value = 1_000_000 + k
        started = time.perf_counter()
        handle = await adapter.submit(value)
        result = await fetch(adapter, worker, handle, deadline)
        elapsed = time.perf_counter() - started
        if result != value + 1:
            raise WrongResult(f"latency task returned {result!r}, expected {value + 1}")
        if k >= LATENCY_WARMUP:
            recorded.append(elapsed)
    return recorded


# -- W5 -------------------------------------------------------------------------------
def mix_caps(mask: int) -> tuple[str, ...]:
    return tuple(c for bit, c in enumerate(MIX_CAPABILITIES) if mask >> bit & 1)


def mix_agents() -> list[tuple[str, list[str]]]:
    """``(agent_id, capabilities)`` of the W5 agents."""
    return [(f"mix-agent-{i}", list(mix_caps(mask))) for i, mask in enumerate(MIX_AGENT_CAPS)]


def mix_plan(n: int) -> list[tuple[int, int]]:
    """``(capability mask, priority rank)`` of each W5 task; every set and rank occurs."""
    rng = random.Random(MIX_SEED)
    combos = [(mask, rank) for mask in range(16) for rank in range(MIX_PRIORITIES)]
    plan = combos[: min(n, len(combos))]
    plan += [(rng.randrange(16), rng.randrange(MIX_PRIORITIES)) for _ in range(n - len(plan))]
    rng.shuffle(plan)
    return plan


@dataclass(slots=True)
class MixCheck:
    """Outcome of the W5 checks (see the module docstring)."""

    claims: int = 0
    priority_violations: int = 0
    fifo_violations: int = 0
    routing_violations: int = 0
    claims_per_agent: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not (self.priority_violations or self.fifo_violations or self.routing_violations)


def check_mix(plan: list[tuple[int, int]], results: list[Any]) -> MixCheck:
    """Check priority order, FIFO per queue and routing from the W5 results.

    ``results[i]`` is ``{"value": i + 1, "agent": id, "n": k}``: task ``i`` was the k-th
    claim of that agent."""
    caps_of = {agent: set(caps) for agent, caps in mix_agents()}
    claims: dict[str, list[tuple[int, int]]] = {}
    check = MixCheck()
    for i, result in enumerate(results):
        if not isinstance(result, dict) or result.get("value") != i + 1:
            raise WrongResult(f"mix task {i} returned {result!r}")
        agent = str(result["agent"])
        claims.setdefault(agent, []).append((int(result["n"]), i))
        if not set(mix_caps(plan[i][0])) <= caps_of.get(agent, set()):
            check.routing_violations += 1
    for agent, seq in claims.items():
        seq.sort()
        check.claims += len(seq)
        check.claims_per_agent[agent] = len(seq)
        lowest_tier_seen = -1
        last_in_queue: dict[tuple[int, int], int] = {}
        for _, i in seq:
            mask, rank = plan[i]
            if rank < lowest_tier_seen:
                check.priority_violations += 1
            lowest_tier_seen = max(lowest_tier_seen, rank)
            queue = (rank, mask)
            if last_in_queue.get(queue, -1) > i:
                check.fifo_violations += 1
            last_in_queue[queue] = i
    return check


async def mix(
    adapter: AragoraAdapter, worker: WorkerProcess, n: int, timeout_s: float
) -> tuple[float, MixCheck]:
    """W5: (tasks/s, checks); the worker must run in mix mode with ``mix_agents()``."""
    plan = mix_plan(n)
    deadline = Deadline(timeout_s, f"submitting {n} mixed tasks")
    handles = []
    for i, (mask, rank) in enumerate(plan):
        if i % 100 == 0:
            deadline.check()
        handles.append(await adapter.submit_mixed(i, mix_caps(mask), rank))
    worker.start(min(WORKER_START_TIMEOUT_S, timeout_s))
    seconds, results = await drain(adapter, worker, handles, timeout_s)
    return n / seconds, check_mix(plan, results)
