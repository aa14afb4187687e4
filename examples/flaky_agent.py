"""An agent whose upstream service keeps breaking: task type "search", model "search-flaky".

It alternates between bad spells, when most searches fail with a retryable error, and
good spells, when almost all succeed. Failed attempts are retried by the control plane
with backoff; during a bad spell the agent's circuit breaker opens and the agent gets no
tasks until the cool-down ends, then trial tasks close the breaker again once the agent
recovers. Run it with a token of role ``agent``::

    export ARAGORA_URL=http://127.0.0.1:8080
    export ARAGORA_TOKEN=$(aragora token create --role agent)
    python examples/flaky_agent.py

FLAKY_BAD_SPELL_S and FLAKY_GOOD_SPELL_S (default 8 and 12 seconds) set the rhythm;
FLAKY_BAD_FAILURE_RATE and FLAKY_GOOD_FAILURE_RATE (default 0.9 and 0.05) how often a
search fails in each. It starts with a bad spell, timed from its first search.
"""

import asyncio
import os
import random
import time

from aragora.agent import Agent, PermanentError, TaskContext


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


BAD_SPELL_S = _env_float("FLAKY_BAD_SPELL_S", 8.0)
GOOD_SPELL_S = _env_float("FLAKY_GOOD_SPELL_S", 12.0)
BAD_FAILURE_RATE = _env_float("FLAKY_BAD_FAILURE_RATE", 0.9)
GOOD_FAILURE_RATE = _env_float("FLAKY_GOOD_FAILURE_RATE", 0.05)

agent = Agent(
    os.environ.get("FLAKY_AGENT_ID", "flaky-search-1"),
    capabilities=["search"],
    model="search-flaky",
    concurrency=2,
)


class UpstreamUnavailable(Exception):
    """The (simulated) search service did not answer; worth another attempt."""


class Spells:
    """Bad spells of ``bad_s`` seconds, then good ones of ``good_s``, from the first call."""

    def __init__(self, bad_s: float, good_s: float) -> None:
        self.bad_s = bad_s
        self.good_s = good_s
        self._started_at: float | None = None

    def in_bad_spell(self, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        if self._started_at is None:
            self._started_at = now_s
        return (now_s - self._started_at) % (self.bad_s + self.good_s) < self.bad_s


spells = Spells(BAD_SPELL_S, GOOD_SPELL_S)


@agent.task("search")
async def search(payload: dict[str, object], ctx: TaskContext) -> dict[str, object]:
    """Three made-up hits for ``payload["query"]``, when the upstream service answers."""
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        raise PermanentError('payload["query"] must be a non-empty string')
    await asyncio.sleep(random.uniform(0.05, 0.3))
    failure_rate = BAD_FAILURE_RATE if spells.in_bad_spell() else GOOD_FAILURE_RATE
    if random.random() < failure_rate:
        raise UpstreamUnavailable(f"search upstream timed out (attempt {ctx.attempt})")
    slug = "-".join(query.lower().split())[:40]
    return {"query": query, "hits": [f"https://example.org/{slug}/{i}" for i in range(1, 4)]}


if __name__ == "__main__":
    agent.run()
