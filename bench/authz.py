"""Microseconds per request spent deciding who calls and whether they may: the three
checks every submit passes through, measured in-process on a real store.

* authenticate: the bearer token to a principal (format and checksum, keyed hash, one
  store read of the token record).
* authorize: the role grant plus the workspace's Cedar rules, with the decision cache
  warm (the steady state) and, separately, with no cache (Cedar runs every time).
* rate limit: one GCRA hit, an atomic store operation on the store clock.

The floor is one plain store round trip of the same kind (``PING`` on Redis; a
``SELECT 1`` on the SQLite store's worker thread), measured in the same run: the
checks cost about two store round trips (token read, rate-limit hit) plus CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.policy.engine import PolicyEngine
from aragora.policy.ratelimit import create_rate_limiter
from aragora.tenancy.models import Action, Role
from aragora.tenancy.service import TenancyService
from aragora.tenancy.store import create_tenancy_store
from bench.throughput import delete_prefix

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RULE = (
    'forbid(principal, action == Action::"task.submit", resource) '
    'when { principal.role == "submitter" && context.priority == "critical" };'
)
CONTEXT = {"task_type": "summarise", "priority": "normal", "payload_bytes": 120}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("ARAGORA_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    )


async def _per_call_us(n: int, call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(min(n, 50)):
        await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - started) / n * 1e6


async def _measure(config: ControlPlaneConfig, n: int) -> dict[str, float]:
    async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
        # The bench workspace lives under a fresh SQLite file or Redis key prefix.
        tenancy = TenancyService(create_tenancy_store(cp.store), os.urandom(32))
        await tenancy.create_workspace("bench")
        _info, token = await tenancy.issue_token("bench", Role.SUBMITTER)
        principal = await tenancy.authenticate(token)
        engine = PolicyEngine.for_store(cp.store)
        await engine.put_rule("bench", "no-critical", RULE)
        uncached = PolicyEngine.for_store(cp.store, cache_size=0)
        limiter = create_rate_limiter(cp.store)

        async def hit() -> object:
            return await limiter.hit("bench", "submit", 1_000_000_000, 60.0)

        return {
            "store round trip (floor)": await _per_call_us(n, cp.store.ping),
            "authenticate": await _per_call_us(n, lambda: tenancy.authenticate(token)),
            "authorize, cache warm": await _per_call_us(
                n, lambda: engine.authorize(principal, Action.TASK_SUBMIT, CONTEXT)
            ),
            "authorize, no cache": await _per_call_us(
                n // 4 or 1, lambda: uncached.authorize(principal, Action.TASK_SUBMIT, CONTEXT)
            ),
            "rate limit hit": await _per_call_us(n, hit),
        }


def main(args: argparse.Namespace) -> int:
    stores = ("sqlite", "redis") if args.store == "both" else (args.store,)
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="aragora-bench-authz-") as tmp:
        for store in stores:
            if store == "sqlite":
                config = ControlPlaneConfig(store_url=f"sqlite:///{Path(tmp) / 'state.db'}")
            else:
                prefix = f"aragora:bench:{uuid.uuid4().hex[:8]}:"
                config = ControlPlaneConfig(redis_url=args.redis_url, key_prefix=prefix)
            try:
                figures = asyncio.run(_measure(config, args.iterations))
            finally:
                if store == "redis":
                    asyncio.run(delete_prefix(args.redis_url, config.key_prefix))
            rows += [(store, name, us) for name, us in figures.items()]
    print("Authentication, policy and rate limit per submit, in-process.\n")
    print("| store | check | µs per call |")
    print("|---|---|---:|")
    for store, name, us in rows:
        print(f"| {store} | {name} | {us:,.1f} |")
    return 0
