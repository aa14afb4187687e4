"""The agent SDK backs off and retries when the server answers 429 to its claims and
heartbeats, instead of stopping: the client maps 429 to ``RateLimitedError``, a transient
``ServerError``. The server rate limits only submits, so a transport in front of the
real in-process app refuses the agent's first claims and heartbeats."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import httpx
import pytest

from aragora.agent import Agent, TaskContext
from aragora.client import AsyncControlPlaneClient
from aragora.control_plane import TaskStatus
from tests.client.inprocess import BASE_URL, TOKEN, InProcess

REFUSED_PATHS = ("/tasks/claim-batch", "/heartbeat")


class RefuseFirst(httpx.AsyncBaseTransport):
    """Answers the first ``times`` claims and heartbeats with 429, then passes through."""

    def __init__(self, app_transport: httpx.AsyncBaseTransport, times: int) -> None:
        self.inner = app_transport
        self.times = times
        self.refused: Counter[str] = Counter()
        self.all_refused = asyncio.Event()
        """Set once every path was refused ``times`` times."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = next((p for p in REFUSED_PATHS if request.url.path.endswith(p)), None)
        if path is not None and self.refused[path] < self.times:
            self.refused[path] += 1
            if all(self.refused[p] == self.times for p in REFUSED_PATHS):
                self.all_refused.set()
            return httpx.Response(
                429,
                headers={"Retry-After": "1", "content-type": "application/problem+json"},
                json={
                    "type": "urn:aragora:problem:rate-limited",
                    "title": "Rate limited",
                    "status": 429,
                    "detail": "slow down",
                    "retry_after_s": 0.01,
                },
            )
        return await self.inner.handle_async_request(request)


async def test_agent_retries_rate_limited_claims_and_heartbeats(
    server: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    transport = RefuseFirst(httpx.ASGITransport(app=server.app), times=3)
    caplog.set_level(logging.WARNING, logger="aragora.agent")
    async with (
        AsyncControlPlaneClient(BASE_URL, TOKEN, transport=transport) as agent_client,
        server.client() as client,
    ):
        agent = Agent(
            "limited-1",
            capabilities=["work"],
            heartbeat_interval_s=0.02,
            claim_wait_s=2.0,
            backoff_initial_s=0.01,
            backoff_max_s=0.02,
            client=agent_client,
        )

        @agent.task("work")
        async def work(payload: dict[str, int], ctx: TaskContext) -> int:
            return payload["n"] * 2

        task_id = await client.submit_task("work", {"n": 21}, ["work"])
        async with agent:
            assert await client.wait_for_result(task_id, 10) == 42
            await asyncio.wait_for(transport.all_refused.wait(), 10)
        assert (await client.get_task(task_id)).status is TaskStatus.COMPLETED

    assert transport.refused == {"/tasks/claim-batch": 3, "/heartbeat": 3}
    events = [getattr(r, "event", "") for r in caplog.records]
    assert events.count("claim_failed") == 3
    assert "heartbeat_failed" in events
    assert "agent_fatal_error" not in events
