"""The agent claims as many tasks as it has free slots in one request and shares
requests between completions, and still works against a server without batch routes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aragora.agent import Agent, TaskContext
from aragora.agent.worker import event_loop_factory
from aragora.client import AsyncControlPlaneClient
from aragora.control_plane import TaskStatus
from tests.client.inprocess import BASE_URL, TOKEN, InProcess, in_process

WAIT_S = 10.0
TASKS = 8


class Recording(httpx.AsyncBaseTransport):
    """Counts the requests per route; with ``without_batches`` it answers the batch
    routes as a server that does not have them would (a plain 404)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, without_batches: bool = False) -> None:
        self.inner = inner
        self.without_batches = without_batches
        self.calls: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = path.rsplit("/", 1)[-1] if "/tasks/" in path else "other"
        self.calls[kind] += 1
        if self.without_batches and kind.endswith("-batch"):
            return httpx.Response(
                404,
                headers={"content-type": "application/problem+json"},
                json={"type": "about:blank", "title": "Not Found", "status": 404, "detail": "x"},
            )
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tmp_path) as running:
        yield running


async def _run_all(server: InProcess, transport: Recording) -> list[str]:
    """Run TASKS tasks on an agent of TASKS slots whose handlers all wait until every
    one of them started; the ids of the tasks."""
    started = 0
    all_started = asyncio.Event()
    async with (
        AsyncControlPlaneClient(BASE_URL, TOKEN, transport=transport) as agent_client,
        server.client() as client,
    ):
        ids = [await client.submit_task("work", {"n": n}, ["work"]) for n in range(TASKS)]
        agent = Agent(
            "batcher-1",
            capabilities=["work"],
            concurrency=TASKS,
            claim_wait_s=1.0,
            client=agent_client,
        )

        @agent.task("work")
        async def work(payload: dict[str, int], ctx: TaskContext) -> int:
            nonlocal started
            started += 1
            if started == TASKS:
                all_started.set()
            await all_started.wait()
            return payload["n"] + 100

        async with agent:
            results = [await client.wait_for_result(i, WAIT_S) for i in ids]
        assert results == [n + 100 for n in range(TASKS)]
        for task_id in ids:
            assert (await client.get_task(task_id)).status is TaskStatus.COMPLETED
    return ids


async def test_an_agent_claims_its_free_slots_at_once_and_shares_completion_requests(
    server: InProcess,
) -> None:
    transport = Recording(httpx.ASGITransport(app=server.app))
    await _run_all(server, transport)
    assert transport.calls["claim"] == 0 and transport.calls["complete"] == 0
    # All TASKS tasks were pending: the first claim took them all.
    assert 1 <= transport.calls["claim-batch"] <= 3
    assert 1 <= transport.calls["complete-batch"] < TASKS


async def test_an_agent_falls_back_to_single_requests_without_batch_routes(
    server: InProcess,
) -> None:
    transport = Recording(httpx.ASGITransport(app=server.app), without_batches=True)
    await _run_all(server, transport)
    assert transport.calls["claim-batch"] == 1
    assert transport.calls["claim"] >= TASKS
    assert transport.calls["complete"] == TASKS and transport.calls["complete-batch"] == 0


def test_agents_run_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert event_loop_factory() is uvloop.new_event_loop
