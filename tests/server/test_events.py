"""The live feed: one store read per tick per workspace however many watch it, pushed
on change, and a stream of server-sent events that never carries another workspace's
data and ends when the server shuts down.

``httpx.ASGITransport`` buffers whole responses, so the stream is read from the app
served by a real uvicorn on a free port in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server.dashboard.feed import AGENTS, OVERVIEW, TASKS, EventHub, FeedEvent
from aragora.server.state import server_state
from tests.server.conftest import (
    API,
    ClientFactory,
    bearer,
    create_workspace,
    issue,
    register,
    submit,
)

STORES = pytest.mark.parametrize("store_kind", ["sqlite", "redis"], indirect=True)
EVENT_TIMEOUT_S = 10.0


def _decode(events: list[FeedEvent]) -> dict[str, Any]:
    return {e.name: json.loads(e.data) for e in events}


async def _next(subscription: Any) -> dict[str, Any]:
    events = await subscription.next_events(EVENT_TIMEOUT_S)
    assert events, "no event within the deadline"
    return _decode(events)


@STORES
async def test_watchers_of_a_workspace_share_one_read_per_tick(
    cp: ControlPlaneCoordinator, app: FastAPI
) -> None:
    observability = server_state(app).observability
    assert observability is not None
    hub = EventHub(cp, observability.health, tick_s=60.0, min_interval_s=0.0)
    try:
        sections = frozenset({OVERVIEW, AGENTS, TASKS})
        async with (
            hub.subscribe("default", sections) as first,
            hub.subscribe("default", sections) as second,
            hub.subscribe("default", sections) as third,
        ):
            for subscription in (first, second, third):
                assert set(await _next(subscription)) == {OVERVIEW, AGENTS, TASKS}
            feed = hub.feed("default")
            assert feed is not None and feed.subscribers == 3
            assert feed.reads == 1

            # A submit on this instance wakes the feed long before its next tick; only
            # the sections that changed are sent.
            task = await cp.submit_task("debate", {"n": 1}, [])
            for subscription in (first, second, third):
                changed = await _next(subscription)
                assert set(changed) == {OVERVIEW, TASKS}
                assert changed[OVERVIEW]["counts"]["pending"] == 1
                assert [t["id"] for t in changed[TASKS]["tasks"]] == [task]
            assert feed.reads == 2
        assert hub.feed("default") is None, "the feed stops with its last watcher"
    finally:
        hub.close()


@STORES
async def test_a_subscriber_sees_only_the_sections_it_may_read(
    cp: ControlPlaneCoordinator, app: FastAPI
) -> None:
    observability = server_state(app).observability
    assert observability is not None
    hub = EventHub(cp, observability.health, tick_s=60.0)
    try:
        async with hub.subscribe("default", frozenset({TASKS})) as tasks_only:
            assert set(await _next(tasks_only)) == {TASKS}
    finally:
        hub.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn (no lifespan: the fixture built its services)."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)  # noqa: sleep-ok (waiting for the socket to listen)
        yield f"http://127.0.0.1:{port}"
    finally:
        server_state(app).begin_shutdown()
        server.should_exit = True
        await serving


class EventReader:
    """Reads one event stream and keeps every raw line it received."""

    def __init__(self, response: httpx.Response) -> None:
        self.raw: list[str] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self._lines = response.aiter_lines()

    async def until(self, name: str, predicate: Any) -> dict[str, Any]:
        """The latest ``name`` event once its data satisfies ``predicate``."""
        if name in self.latest and predicate(self.latest[name]):
            return self.latest[name]
        event = None
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for line in self._lines:
                self.raw.append(line)
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event is not None:
                    data: dict[str, Any] = json.loads(line.removeprefix("data: "))
                    self.latest[event] = data
                    if event == name and predicate(data):
                        return data
        raise AssertionError(f"the stream ended before a matching {name} event")

    async def drain(self) -> None:
        """Read until the server ends the stream."""
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for line in self._lines:
                self.raw.append(line)


@STORES
@pytest.mark.timeout(30)
async def test_the_stream_of_one_workspace_never_carries_another_workspaces_events(
    app: FastAPI, client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "ws-a")
    await create_workspace(client, "ws-b")
    viewer_a = await issue(client, "viewer", "ws-a")
    admin_a = await client_for(await issue(client, "admin", "ws-a"))
    admin_b_token = await issue(client, "admin", "ws-b")
    admin_b = await client_for(admin_b_token)
    stream_headers = {"Accept": "text/event-stream"}

    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=EVENT_TIMEOUT_S) as http,
        http.stream("GET", f"{API}/events", headers={**stream_headers, **bearer(viewer_a)}) as a,
        http.stream(
            "GET", f"{API}/events", headers={**stream_headers, **bearer(admin_b_token)}
        ) as b,
    ):
        assert a.status_code == 200
        assert a.headers["content-type"].startswith("text/event-stream")
        assert a.headers["cache-control"] == "no-store"
        stream_a, stream_b = EventReader(a), EventReader(b)
        await stream_a.until(TASKS, lambda d: d["tasks"] == [])
        await stream_b.until(TASKS, lambda d: d["tasks"] == [])

        await register(admin_b, "agent-of-b", ["b-secret-capability"])
        b_task = await submit(admin_b, "b-secret-type", payload={"secret": "b-marker"})
        await stream_b.until(TASKS, lambda d: [t["id"] for t in d["tasks"]] == [b_task])
        await stream_b.until(AGENTS, lambda d: len(d["agents"]) == 1)
        # A's feed read its workspace after B's task existed; it shows only its own.
        a_task = await submit(admin_a, "a-type")
        await stream_a.until(TASKS, lambda d: [t["id"] for t in d["tasks"]] == [a_task])
        overview = await stream_a.until(OVERVIEW, lambda d: d["counts"]["pending"] == 1)
        assert overview["agents_by_status"]["idle"] == 0

        leaked = "\n".join(stream_a.raw)
        for marker in (b_task, "b-secret-type", "b-marker", "agent-of-b", "ws-b"):
            assert marker not in leaked


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
@pytest.mark.timeout(30)
async def test_the_stream_ends_when_the_server_begins_to_shut_down(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await issue(client, "viewer")
    headers = {"Accept": "text/event-stream", **bearer(token)}
    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=EVENT_TIMEOUT_S) as http,
        http.stream("GET", f"{API}/events", headers=headers) as response,
    ):
        reader = EventReader(response)
        await reader.until(OVERVIEW, lambda d: "counts" in d)
        server_state(app).begin_shutdown()
        await reader.drain()  # returns only when the server closed the stream
