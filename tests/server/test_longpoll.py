"""Long-polls end when their task finishes, a task arrives, time is up, the server stops,
or the client goes away.

A test learns that a request is waiting from the server's long-poll count, not from
sleeping. Elapsed times are only checked against bounds far below the requested wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Message

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server.longpoll import CANCEL_GRACE_S, CLIENT_GONE_STATUS, SHUTDOWN, long_poll
from aragora.server.state import ServerState
from tests.server.conftest import ADMIN_TOKEN, API, claim, register, submit

LONG_WAIT_S = 30.0
PROMPT_S = 10.0


async def test_get_task_returns_as_soon_as_the_task_completes(
    client: httpx.AsyncClient, state: ServerState
) -> None:
    await register(client)
    task_id = await submit(client)
    token = (await claim(client))["lease_token"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(
        client.get(f"{API}/tasks/{task_id}", params={"wait_s": LONG_WAIT_S})
    )
    await state.long_polls.wait_for(1)
    assert not waiting.done()

    completed = await client.post(
        f"{API}/tasks/{task_id}/complete", json={"lease_token": token, "result": "done"}
    )
    assert completed.status_code == 200
    response = await waiting
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["result"]) == ("completed", "done")
    assert response.json()["lease_token"] is None
    assert loop.time() - started < PROMPT_S
    assert state.long_polls.active == 0


async def test_get_task_returns_the_current_state_when_wait_s_passes(
    client: httpx.AsyncClient,
) -> None:
    task_id = await submit(client)
    response = await client.get(f"{API}/tasks/{task_id}", params={"wait_s": 0.05})
    assert response.status_code == 200
    assert response.json()["status"] == "pending"


async def test_claim_with_wait_s_returns_when_a_task_is_submitted(
    client: httpx.AsyncClient, state: ServerState
) -> None:
    await register(client, capabilities=["debate"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(
        client.post(f"{API}/tasks/claim", json={"agent_id": "agent-1", "wait_s": LONG_WAIT_S})
    )
    await state.long_polls.wait_for(1)
    assert not waiting.done()

    task_id = await submit(client, required_capabilities=["debate"])
    response = await waiting
    assert response.status_code == 200
    assert response.json()["id"] == task_id
    assert response.json()["lease_token"]
    assert loop.time() - started < PROMPT_S


async def test_claim_with_wait_s_answers_204_when_time_is_up(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.post(f"{API}/tasks/claim", json={"agent_id": "agent-1", "wait_s": 0.05})
    assert response.status_code == 204


async def test_shutdown_releases_waiting_requests_with_their_current_state(
    client: httpx.AsyncClient, state: ServerState
) -> None:
    await register(client, capabilities=["debate"])
    task_id = await submit(client, required_capabilities=["other"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    get = asyncio.create_task(client.get(f"{API}/tasks/{task_id}", params={"wait_s": LONG_WAIT_S}))
    claim_ = asyncio.create_task(
        client.post(f"{API}/tasks/claim", json={"agent_id": "agent-1", "wait_s": LONG_WAIT_S})
    )
    await state.long_polls.wait_for(2)

    state.begin_shutdown()
    got, claimed = await asyncio.gather(get, claim_)
    assert got.status_code == 200
    assert got.json()["status"] == "pending"
    assert claimed.status_code == 204
    assert loop.time() - started < PROMPT_S

    # Once shutting down, a new long-poll answers at once.
    again = await client.get(f"{API}/tasks/{task_id}", params={"wait_s": LONG_WAIT_S})
    assert again.status_code == 200
    assert loop.time() - started < PROMPT_S


async def _call_and_disconnect(
    app: FastAPI, state: ServerState, method: str, path: str, query: bytes, body: bytes
) -> list[dict[str, Any]]:
    """Drive the app over raw ASGI; the client disconnects once the request waits."""
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {ADMIN_TOKEN}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    call = asyncio.create_task(app(scope, receive, send))
    await state.long_polls.wait_for(1)
    gone.set()
    await call
    return sent


@pytest.mark.parametrize("kind", ["get", "claim"])
async def test_a_client_that_goes_away_ends_its_long_poll_quietly(
    app: FastAPI,
    state: ServerState,
    client: httpx.AsyncClient,
    cp: ControlPlaneCoordinator,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    await register(client)
    task_id = await submit(client, required_capabilities=["other"])
    caplog.set_level(logging.DEBUG)
    if kind == "get":
        sent = await _call_and_disconnect(
            app, state, "GET", f"{API}/tasks/{task_id}", b"wait_s=30", b""
        )
    else:
        sent = await _call_and_disconnect(
            app, state, "POST", f"{API}/tasks/claim", b"", b'{"agent_id": "agent-1", "wait_s": 30}'
        )
    assert sent[0]["status"] == CLIENT_GONE_STATUS
    assert state.long_polls.active == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # Nothing was claimed for the client that left.
    assert (await cp.get_task(task_id)).status.value == "pending"


async def test_shutdown_answers_even_when_the_work_ignores_its_cancellation(
    state: ServerState,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> str:
        while True:
            try:
                await release.wait()
                return "finished"
            except asyncio.CancelledError:
                continue  # what a library that swallows cancellation does

    async def never_disconnects() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    request = Request({"type": "http", "method": "GET", "headers": []}, never_disconnects)
    answer = asyncio.create_task(long_poll(request, state, stubborn()))
    await state.long_polls.wait_for(1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    state.begin_shutdown()

    assert await answer is SHUTDOWN
    assert loop.time() - started < CANCEL_GRACE_S + 1.0
    release.set()
