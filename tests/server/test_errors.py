"""Bad input gets a problem+json naming the field and the reason, and changes nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from aragora.control_plane import (
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    StoreUnavailableError,
)
from aragora.server.middleware.body_limit import request_body_limit_bytes
from aragora.server.problems import handle_unexpected_error, problem_for_error
from aragora.server.schemas import MAX_JSON_DEPTH
from tests.server.conftest import (
    API,
    assert_problem,
    claim,
    http_client,
    register,
    started_app,
    submit,
)

SUBMIT = f"{API}/tasks/submit"


async def _no_tasks(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"{API}/tasks")).json()
    assert body["tasks"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "t", "payload": 1, "priority": "urgent"}, "priority"),
        ({"task_type": "t", "payload": 1, "priority": 1}, "priority"),
        ({"task_type": "", "payload": 1}, "task_type"),
        ({"task_type": "t" * 129, "payload": 1}, "task_type"),
        ({"task_type": "has space", "payload": 1}, "task_type"),
        ({"task_type": "t\n", "payload": 1}, "task_type"),
        ({"payload": 1}, "task_type"),
        ({"task_type": "t"}, "payload"),
        ({"task_type": 5, "payload": 1}, "task_type"),
        (
            {"task_type": "t", "payload": 1, "required_capabilities": "debate"},
            "required_capabilities",
        ),
        (
            {"task_type": "t", "payload": 1, "required_capabilities": ["ok", ""]},
            "required_capabilities[1]",
        ),
        (
            {"task_type": "t", "payload": 1, "required_capabilities": ["c"] * 33},
            "required_capabilities",
        ),
        ({"task_type": "t", "payload": 1, "max_retries": "3"}, "max_retries"),
        ({"task_type": "t", "payload": 1, "max_retries": 101}, "max_retries"),
        ({"task_type": "t", "payload": 1, "max_retries": True}, "max_retries"),
        ({"task_type": "t", "payload": 1, "timeout_s": 0}, "timeout_s"),
        ({"task_type": "t", "payload": 1, "timeout_s": 1e9}, "timeout_s"),
        ({"task_type": "t", "payload": 1, "idempotency_key": ""}, "idempotency_key"),
        ({"task_type": "t", "payload": 1, "metadata": [1]}, "metadata"),
        ({"task_type": "t", "payload": 1, "workspace_id": "other"}, "workspace_id"),
        ({"task_type": "t", "payload": 1, "bogus": True}, "bogus"),
    ],
)
async def test_submit_rejects_bad_fields_with_422(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(SUBMIT, json=body)
    problem = assert_problem(response, 422, "validation-error", field)
    assert problem["errors"][0]["reason"]
    await _no_tasks(client)


async def test_unknown_priority_reason_lists_the_priorities(client: httpx.AsyncClient) -> None:
    response = await client.post(SUBMIT, json={"task_type": "t", "payload": 1, "priority": "x"})
    reason = assert_problem(response, 422, "validation-error", "priority")["errors"][0]["reason"]
    for name in ("critical", "high", "normal", "low"):
        assert name in reason


async def test_every_rejected_field_is_listed(client: httpx.AsyncClient) -> None:
    response = await client.post(SUBMIT, json={"task_type": "", "priority": "x"})
    problem = assert_problem(response, 422, "validation-error", "task_type")
    assert {e["field"] for e in problem["errors"]} == {"task_type", "payload", "priority"}


async def test_payload_over_the_limit_is_413_naming_payload(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    payload = "x" * (cp.config.max_payload_bytes + 1)
    response = await client.post(SUBMIT, json={"task_type": "t", "payload": payload})
    problem = assert_problem(response, 413, "payload-too-large", "payload")
    assert problem["limit_bytes"] == cp.config.max_payload_bytes
    assert problem["size_bytes"] == cp.config.max_payload_bytes + 3
    await _no_tasks(client)


async def test_result_over_the_limit_is_413_naming_result(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    await register(client)
    task_id = await submit(client)
    token = (await claim(client))["lease_token"]
    response = await client.post(
        f"{API}/tasks/{task_id}/complete",
        json={"lease_token": token, "result": "x" * (cp.config.max_payload_bytes + 1)},
    )
    assert_problem(response, 413, "payload-too-large", "result")
    assert (await client.get(f"{API}/tasks/{task_id}")).json()["status"] == "running"


async def test_body_over_the_limit_is_413_before_it_is_read(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    limit = request_body_limit_bytes(cp.config)
    body = json.dumps({"task_type": "t", "payload": "x" * limit})
    response = await client.post(SUBMIT, content=body, headers={"content-type": "application/json"})
    assert assert_problem(response, 413, "payload-too-large")["limit_bytes"] == limit
    await _no_tasks(client)


async def test_streamed_body_over_the_limit_is_cut_off(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator
) -> None:
    limit = request_body_limit_bytes(cp.config)
    chunk = b"x" * 65_536
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"task_type": "t", "payload": "'
        while sent < 50 * limit:
            sent += len(chunk)
            yield chunk

    response = await client.post(
        SUBMIT, content=endless(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert assert_problem(response, 413, "payload-too-large")["limit_bytes"] == limit
    assert sent <= limit + len(chunk)
    await _no_tasks(client)


async def test_nesting_deeper_than_the_limit_is_422(client: httpx.AsyncClient) -> None:
    depth = MAX_JSON_DEPTH + 1
    body = '{"task_type": "t", "payload": ' + "[" * depth + "]" * depth + "}"
    response = await client.post(SUBMIT, content=body, headers={"content-type": "application/json"})
    assert_problem(response, 422, "validation-error", "payload")
    ok = MAX_JSON_DEPTH
    body = '{"task_type": "t", "payload": ' + "[" * ok + "]" * ok + "}"
    response = await client.post(SUBMIT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 201


@pytest.mark.parametrize("depth", [990, 5000, 100_000])
async def test_nesting_beyond_the_parser_is_400_or_422(
    client: httpx.AsyncClient, depth: int
) -> None:
    body = '{"task_type": "t", "payload": ' + "[" * depth + "]" * depth + "}"
    response = await client.post(SUBMIT, content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["field"] in ("body", "payload")


@pytest.mark.parametrize(
    "content",
    [
        '{"task_type": "t", "payload": ',
        "not json",
        '{"task_type": "t",}',
        b"\xff\xfe{}",
        "1" * 5000,
    ],
)
async def test_malformed_json_is_400_naming_the_body(
    client: httpx.AsyncClient, content: str | bytes
) -> None:
    response = await client.post(
        SUBMIT, content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed-json", "body")
    await _no_tasks(client)


@pytest.mark.parametrize("content", ["[]", "null", '"text"', "3"])
async def test_a_body_that_is_not_an_object_is_422(client: httpx.AsyncClient, content: str) -> None:
    response = await client.post(
        SUBMIT, content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation-error", "body")


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(SUBMIT), 422, "validation-error", "body")


async def test_a_body_not_sent_as_json_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SUBMIT, content='{"task_type": "t", "payload": 1}', headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported-media-type", "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_id": "", "capabilities": [], "model": "m"}, "agent_id"),
        ({"agent_id": "a b", "capabilities": [], "model": "m"}, "agent_id"),
        ({"agent_id": "a", "capabilities": ["x,y"], "model": "m"}, "capabilities[0]"),
        ({"agent_id": "a", "capabilities": [], "model": ""}, "model"),
        (
            {"agent_id": "a", "capabilities": [], "model": "m", "max_concurrent_tasks": 0},
            "max_concurrent_tasks",
        ),
        (
            {"agent_id": "a", "capabilities": [], "model": "m", "max_concurrent_tasks": 1.5},
            "max_concurrent_tasks",
        ),
        ({"agent_id": "a", "model": "m"}, "capabilities"),
    ],
)
async def test_register_rejects_bad_fields(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(f"{API}/agents/register", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert (await client.get(f"{API}/agents")).json()["agents"] == []


@pytest.mark.parametrize("status", ["offline", "asleep", 3])
async def test_heartbeat_rejects_a_status_it_cannot_set(
    client: httpx.AsyncClient, status: object
) -> None:
    await register(client)
    response = await client.post(f"{API}/agents/agent-1/heartbeat", json={"status": status})
    assert_problem(response, 422, "validation-error", "status")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/tasks/nope", None),
        ("GET", "/tasks/nope?wait_s=5", None),
        ("POST", "/tasks/nope/complete", {"lease_token": "t", "result": 1}),
        ("POST", "/tasks/nope/fail", {"lease_token": "t", "error": "e"}),
        ("POST", "/tasks/nope/cancel", None),
        ("POST", "/tasks/nope/retry", None),
    ],
)
async def test_unknown_task_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(method, API + path, json=body)
    assert_problem(response, 404, "task-not-found")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/agents/ghost", None),
        ("POST", "/agents/ghost/heartbeat", None),
        ("DELETE", "/agents/ghost", None),
        ("POST", "/tasks/claim", {"agent_id": "ghost"}),
        ("POST", "/tasks/claim", {"agent_id": "ghost", "wait_s": 5}),
    ],
)
async def test_unknown_agent_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(method, API + path, json=body)
    assert_problem(response, 404, "agent-not-found")


async def test_stale_lease_token_is_409_and_changes_nothing(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client)
    await claim(client)
    for action, body in (
        ("complete", {"lease_token": "not-the-token", "result": 1}),
        ("fail", {"lease_token": "not-the-token", "error": "e"}),
    ):
        response = await client.post(f"{API}/tasks/{task_id}/{action}", json=body)
        assert_problem(response, 409, "lease-lost")
    task = (await client.get(f"{API}/tasks/{task_id}")).json()
    assert (task["status"], task["result"], task["errors"]) == ("running", None, [])


async def test_completing_a_cancelled_task_is_409_task_cancelled(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client)
    token = (await claim(client))["lease_token"]
    await client.post(f"{API}/tasks/{task_id}/cancel")
    complete = await client.post(
        f"{API}/tasks/{task_id}/complete", json={"lease_token": token, "result": 1}
    )
    assert_problem(complete, 409, "task-cancelled")
    fail = await client.post(
        f"{API}/tasks/{task_id}/fail", json={"lease_token": token, "error": "e"}
    )
    assert_problem(fail, 409, "task-cancelled")
    assert (await client.get(f"{API}/tasks/{task_id}")).json()["status"] == "cancelled"


async def test_retry_of_a_task_that_is_not_failed_is_409(client: httpx.AsyncClient) -> None:
    task_id = await submit(client)
    assert_problem(await client.post(f"{API}/tasks/{task_id}/retry"), 409, "invalid-state")
    assert (await client.get(f"{API}/tasks/{task_id}")).json()["status"] == "pending"


async def test_cancel_of_a_completed_task_is_409(client: httpx.AsyncClient) -> None:
    await register(client)
    task_id = await submit(client)
    token = (await claim(client))["lease_token"]
    await client.post(f"{API}/tasks/{task_id}/complete", json={"lease_token": token, "result": 1})
    assert_problem(await client.post(f"{API}/tasks/{task_id}/cancel"), 409, "invalid-state")


@pytest.mark.parametrize("wait_s", ["-1", "61", "nan", "inf", "soon"])
async def test_get_task_wait_s_out_of_range_is_422(client: httpx.AsyncClient, wait_s: str) -> None:
    task_id = await submit(client)
    response = await client.get(f"{API}/tasks/{task_id}", params={"wait_s": wait_s})
    assert_problem(response, 422, "validation-error", "wait_s")


@pytest.mark.parametrize("wait_s", [-1, 61, "5", None])
async def test_claim_wait_s_out_of_range_is_422(client: httpx.AsyncClient, wait_s: object) -> None:
    await register(client)
    response = await client.post(
        f"{API}/tasks/claim", json={"agent_id": "agent-1", "wait_s": wait_s}
    )
    assert_problem(response, 422, "validation-error", "wait_s")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"task_type": "a b"}, "task_type"),
        ({"cursor": "²"}, "cursor"),
        ({"cursor": "not a cursor"}, "cursor"),
    ],
)
async def test_list_tasks_rejects_bad_query(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get(f"{API}/tasks", params=params)
    assert_problem(response, 422, "validation-error", field)


async def test_list_agents_rejects_bad_query(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/agents", params={"status": "asleep"})
    assert_problem(response, 422, "validation-error", "status")
    response = await client.get(f"{API}/agents", params={"capability": "a,b"})
    assert_problem(response, 422, "validation-error", "capability")


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/control-plane/nothing/here")
    body = assert_problem(response, 404, "about:blank")
    assert body["title"] == "Not Found"


async def test_wrong_method_is_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete(f"{API}/tasks")
    assert_problem(response, 405, "about:blank")
    assert response.headers["allow"] == "GET"


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "app": FastAPI()})


async def test_unexpected_errors_are_500_without_details() -> None:
    response = await handle_unexpected_error(_request(), RuntimeError("secret detail"))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    text = bytes(response.body).decode()
    assert "secret" not in text and "Traceback" not in text
    assert json.loads(text)["type"].endswith("internal-error")


def test_store_unavailable_is_503_with_retry_after_and_no_internals() -> None:
    response = problem_for_error(StoreUnavailableError("redis at 10.0.0.7:6379 refused"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = json.loads(bytes(response.body))
    assert body["type"].endswith("store-unavailable")
    assert "10.0.0.7" not in body["detail"]


async def test_an_unreachable_store_is_503_and_health_fails(tmp_path: Path) -> None:
    """A Redis that dies under a running server: problems say 503, health says fail."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(10):
            while b"Ready to accept connections" not in await proc.stdout.readline():
                pass
        config = ControlPlaneConfig(redis_url=f"redis://127.0.0.1:{port}/0")
        async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
            app = await started_app(cp)
            async with http_client(app) as client:
                assert (await client.get(f"{API}/tasks")).status_code == 200
                proc.kill()
                await proc.wait()
                assert_problem(await client.get(f"{API}/tasks"), 503, "store-unavailable")
                submitted = await client.post(SUBMIT, json={"task_type": "t", "payload": 1})
                assert_problem(submitted, 503, "store-unavailable")
                assert submitted.headers["retry-after"] == "1"
                # Without the store no token can be checked: 503 before any route runs.
                assert_problem(await client.get(f"{API}/health"), 503, "store-unavailable")
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert "127.0.0.1" not in ready.text  # open probe: no internals
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/tasks/submit", '{"task_type": "t", "payload": "\\ud800"}', "payload"),
        ("/tasks/submit", '{"task_type": "t", "payload": {"\\udc00": 1}}', "payload"),
        (
            "/tasks/submit",
            '{"task_type": "t", "payload": 1, "metadata": {"a": ["\\ud800"]}}',
            "metadata",
        ),
        (
            "/tasks/submit",
            '{"task_type": "t", "payload": 1, "idempotency_key": "\\ud800"}',
            "idempotency_key",
        ),
        ("/agents/register", '{"agent_id": "a", "capabilities": [], "model": "\\ud800"}', "model"),
        ("/tasks/x/complete", '{"lease_token": "t", "result": "\\ud800"}', "result"),
        ("/tasks/x/fail", '{"lease_token": "t", "error": "\\ud800"}', "error"),
    ],
)
async def test_strings_that_are_not_unicode_are_422(
    client: httpx.AsyncClient, path: str, body: str, field: str
) -> None:
    """A lone surrogate escape decodes to a string no UTF-8 answer could carry back."""
    response = await client.post(
        API + path, content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation-error", field)


async def test_a_valid_surrogate_pair_round_trips(client: httpx.AsyncClient) -> None:
    body = '{"task_type": "t", "payload": "\\ud83d\\ude00"}'
    response = await client.post(SUBMIT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 201
    task = await client.get(f"{API}/tasks/{response.json()['task_id']}")
    assert task.json()["payload"] == "\N{GRINNING FACE}"
