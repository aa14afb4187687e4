"""Measure ``PolicyEngine.authorize``: microseconds per check, with and without the cache.

    python -m aragora.policy.bench [--checks 20000]

Runs on a throw-away SQLite store with the two example rules of the docs (a
submitter may not submit CRITICAL; only agents with ``code`` may claim ``execute``).
The refresh interval is set beyond the run, so no store read happens while timing:
the numbers are the in-process cost of a decision.

* cached: the same request again, answered from the LRU map;
* uncached: the cache turned off, so every check evaluates the rules with Cedar;
* uncached, no rules: the cache turned off in a workspace without rules (role grant only).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aragora.control_plane import ControlPlaneConfig
from aragora.policy.engine import PolicyEngine
from aragora.policy.store import create_policy_store
from aragora.store import create_store
from aragora.tenancy.models import Action, Principal, Role

RULES = {
    "no-critical": (
        'forbid(principal, action == Action::"task.submit", resource)'
        ' when { principal.role == "submitter" && context.priority == "critical" };'
    ),
    "execute-needs-code": (
        'forbid(principal, action == Action::"task.claim", resource)'
        ' when { context.task_type == "execute" && !context.agent_capabilities.contains("code") };'
    ),
}


@dataclass(frozen=True, slots=True)
class BenchResult:
    """Mean microseconds per ``authorize`` call."""

    cached_us: float
    uncached_us: float
    uncached_no_rules_us: float
    checks: int


async def _time_us(
    engine: PolicyEngine, principal: Principal, attrs: Mapping[str, object], checks: int
) -> float:
    await engine.authorize(principal, Action.TASK_SUBMIT, attrs)  # load rules, warm up
    start = time.perf_counter()
    for _ in range(checks):
        await engine.authorize(principal, Action.TASK_SUBMIT, attrs)
    return (time.perf_counter() - start) / checks * 1_000_000


async def measure(checks: int = 20_000) -> BenchResult:
    """Time ``checks`` calls of each kind (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="aragora-policy-bench-") as tmp:
        store = create_store(ControlPlaneConfig(store_url=f"sqlite:///{Path(tmp) / 'bench.db'}"))
        await store.open()
        try:
            policy_store = create_policy_store(store)
            for rule_id, text in RULES.items():
                await policy_store.put_rule("bench", rule_id, text)
            attrs = {"priority": "high", "task_type": "debate", "payload_bytes": 512}
            submitter = Principal("bench", Role.SUBMITTER, "tok")
            in_empty_workspace = Principal("empty", Role.SUBMITTER, "tok")
            cached = PolicyEngine(policy_store, rules_refresh_s=1e9)
            uncached = PolicyEngine(policy_store, rules_refresh_s=1e9, cache_size=0)
            return BenchResult(
                cached_us=await _time_us(cached, submitter, attrs, checks),
                uncached_us=await _time_us(uncached, submitter, attrs, checks),
                uncached_no_rules_us=await _time_us(uncached, in_empty_workspace, attrs, checks),
                checks=checks,
            )
        finally:
            await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checks", type=int, default=20_000, help="calls per measurement")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.checks))
    print(f"policy check, cached:             {result.cached_us:8.2f} us")
    print(f"policy check, uncached (2 rules): {result.uncached_us:8.2f} us")
    print(f"policy check, uncached (no rules):{result.uncached_no_rules_us:8.2f} us")
    print(f"({result.checks} checks each)")


if __name__ == "__main__":
    main()
