"""Requests per second through ``aragora serve``: submit, and claim + complete.

What is measured: one ``aragora serve`` process (a subprocess on a free loopback port,
its store the embedded SQLite file or Redis) and this process as the client, using
the project's async HTTP client with ``--concurrency`` requests in flight.

* submit: N ``POST /tasks/submit`` requests; requests/s = N / wall time.
Every request is authenticated, authorised and (submits) rate limited, as in production.

* claim + complete: ``--concurrency`` agents each claim a task (``POST /tasks/claim``,
  no wait) and complete it (``POST /tasks/{id}/complete``) until the N tasks are done;
  pairs/s = N / wall time (two requests per pair).

The floor is ``GET /livez`` on the same server with the same client and concurrency,
measured in the same run: the cost of HTTP, routing and the client with no control
plane work. ratio = requests/s of the operation / floor requests/s.

For whole workloads through the server and the SDK agent, compared with the library
path, see ``python -m bench w3``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from aragora.client import AsyncControlPlaneClient
from bench.server import ServerProcess
from bench.throughput import delete_prefix

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Row:
    store: str
    operation: str
    count: int
    seconds: float
    floor_per_s: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=("sqlite", "redis", "both"), default="sqlite")
    parser.add_argument("--requests", type=int, default=2000, help="tasks per operation")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--redis-url", default=os.environ.get("ARAGORA_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    )


async def _timed(count: int, concurrency: int, one: Callable[[int, int], Awaitable[None]]) -> float:
    """Run ``one(worker, i)`` for i in range(count) on ``concurrency`` workers."""
    queue = iter(range(count))

    async def worker(index: int) -> None:
        for i in queue:
            await one(index, i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.perf_counter() - started


async def _measure(store: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    store_url = args.redis_url if store == "redis" else None
    server = ServerProcess(workdir / store, store_url)
    try:
        return await _measure_on(server, store, args)
    finally:
        if store_url is not None:
            await delete_prefix(store_url, server.key_prefix)


async def _measure_on(server: ServerProcess, store: str, args: argparse.Namespace) -> list[Row]:
    async with (
        server,
        AsyncControlPlaneClient(server.url, server.token) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):

        async def livez(_worker: int, _i: int) -> None:
            (await http.get("/livez")).raise_for_status()

        async def submit(_worker: int, i: int) -> None:
            await client.submit_task("bench", {"i": i})

        # Authentication, policy and the rate limiter all run; the limit is set out
        # of reach so that it does not cap the measurement.
        await client.update_workspace(
            "default", quotas={"max_submits_per_minute": 1_000_000_000, "max_agents": None}
        )
        agents = [f"agent-{a}" for a in range(args.concurrency)]
        for agent in agents:
            await client.register_agent(agent, [], "bench", max_concurrent_tasks=1)

        async def claim_complete(worker: int, _i: int) -> None:
            task = await client.claim_task(agents[worker])
            assert task is not None and task.lease_token is not None
            await client.complete_task(task.id, {"ok": True}, lease_token=task.lease_token)

        await _timed(50, args.concurrency, livez)  # warm up
        floor_s = await _timed(args.requests, args.concurrency, livez)
        floor = args.requests / floor_s
        submit_s = await _timed(args.requests, args.concurrency, submit)
        pairs_s = await _timed(args.requests, args.concurrency, claim_complete)
    return [
        Row(store, "submit", args.requests, submit_s, floor),
        Row(store, "claim + complete (pairs)", args.requests, pairs_s, floor),
    ]


def main(args: argparse.Namespace) -> int:
    stores = ("sqlite", "redis") if args.store == "both" else (args.store,)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="aragora-bench-http-") as tmp:
        for store in stores:
            rows += asyncio.run(_measure(store, args, Path(tmp)))
    print(
        f"HTTP through aragora serve, {args.concurrency} requests in flight "
        f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs).\n"
    )
    print("| store | operation | count | seconds | per s | floor GET /livez per s | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.store} | {r.operation} | {r.count} | {r.seconds:.2f} | {r.per_s:,.0f} "
            f"| {r.floor_per_s:,.0f} | {r.per_s / r.floor_per_s:.2f} |"
        )
    return 0
