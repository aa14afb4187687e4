"""Observability of one server: /metrics, health with instances and hysteresis, agent
health, alerts wired to the coordinator, correlation ids in tasks and in log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from aragora.alerts import AlertEvent
from aragora.control_plane import ControlPlaneCoordinator
from aragora.control_plane.health import HealthStatus
from aragora.control_plane.models import ReapReport, Task
from aragora.observability.logging import configure_logging
from aragora.server.health import HealthAnswer, Hysteresis
from aragora.server.observability import ServerObservability
from aragora.server.schemas import AgentHealthOut
from aragora.server.services import close_services
from aragora.server.state import ServerState
from tests.conftest import Clock
from tests.server.conftest import (
    ADMIN_TOKEN,
    API,
    ClientFactory,
    assert_problem,
    claim,
    create_workspace,
    issue,
    register,
    submit,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def observability_of(state: ServerState) -> ServerObservability:
    assert state.observability is not None
    return state.observability


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# -- metrics -------------------------------------------------------------------------
async def test_metrics_count_tasks_of_the_workspace_and_http_requests(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "agent-1")
    await submit(client)
    await submit(client, priority="high")
    claimed = await claim(client, "agent-1")
    done = await client.post(
        f"{API}/tasks/{claimed['id']}/complete",
        json={"result": {"ok": True}, "lease_token": claimed["lease_token"]},
    )
    assert done.status_code == 200, done.text

    samples = await scrape(client)
    ws = ("workspace", "default")
    submitted = "aragora_tasks_submitted_total"
    assert samples[(submitted, (("priority", "high"), ws))] == 1
    assert samples[(submitted, (("priority", "normal"), ws))] == 1
    assert samples[("aragora_tasks_completed_total", (("priority", "high"), ws))] == 1
    submits = (("method", "POST"), ("route", f"{API}/tasks/submit"), ("status", "201"))
    assert samples[("aragora_http_requests_total", submits)] == 2
    timed = (("method", "POST"), ("route", f"{API}/tasks/submit"))
    assert samples[("aragora_http_request_duration_seconds_count", timed)] == 2
    # Gauges read from the store at scrape time, and store operations timed.
    assert samples[("aragora_agents", (("status", "idle"), ws))] == 1
    assert samples[("aragora_queue_tasks", (("status", "pending"), ws))] == 1
    assert samples[("aragora_instances", (("state", "live"),))] == 1
    assert samples[("aragora_store_up", ())] == 1
    ok_submits = (("operation", "submit"), ("outcome", "ok"))
    assert samples[("aragora_store_operation_duration_seconds_count", ok_submits)] == 2


async def test_metrics_are_for_admins_of_workspace_default_only(
    client: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await create_workspace(client, "other")
    other_admin = await client_for(await issue(client, "admin", "other"))
    body = assert_problem(await other_admin.get("/metrics"), 403, "forbidden")
    assert "workspace default" in body["detail"]
    operator = await client_for(await issue(client, "operator"))
    assert_problem(await operator.get("/metrics"), 403, "forbidden")
    anonymous = await client_for(None)
    assert_problem(await anonymous.get("/metrics"), 401, "unauthorized")


# -- health --------------------------------------------------------------------------
def test_hysteresis_needs_two_bad_evaluations_and_recovers_at_once() -> None:
    hysteresis = Hysteresis()
    bad, good = HealthStatus.FAIL, HealthStatus.PASS
    assert [hysteresis.observe("store", s) for s in (bad, good, bad, good)] == [good] * 4
    assert hysteresis.observe("store", bad) is good
    assert hysteresis.observe("store", bad) is bad
    assert hysteresis.observe("store", HealthStatus.WARN) is HealthStatus.WARN
    assert hysteresis.observe("store", good) is good
    # Components are independent.
    assert hysteresis.observe("instance:a", bad) is good
    assert hysteresis.observe("instance:b", bad) is good
    assert HealthAnswer(bad, ()).http_status == 503
    assert HealthAnswer(HealthStatus.WARN, ()).http_status == 200


def test_hysteresis_forgets_the_least_recently_seen_components() -> None:
    hysteresis = Hysteresis(max_components=2)
    hysteresis.observe("a", HealthStatus.FAIL)
    hysteresis.observe("b", HealthStatus.FAIL)
    hysteresis.observe("c", HealthStatus.FAIL)
    assert hysteresis.observe("a", HealthStatus.FAIL) is HealthStatus.PASS


async def test_one_bad_evaluation_does_not_degrade_the_overall_status(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator, clock: Clock, state: ServerState
) -> None:
    await register(client, "agent-1")
    clock.advance(cp.config.heartbeat_timeout + 1)
    await cp.reap()  # the agent is offline now
    await observability_of(state).instances.beat()  # this instance beat on the moved clock

    first = await client.get(f"{API}/health")
    assert (first.status_code, first.json()["status"]) == (200, "pass")
    agents = first.json()["checks"]["agents"][0]
    assert agents["status"] == "warn"
    assert agents["details"]["by_status"]["offline"] == 1
    assert "offline" in agents["output"]

    second = await client.get(f"{API}/health")
    assert (second.status_code, second.json()["status"]) == (200, "warn")

    beat = await client.post(f"{API}/agents/agent-1/heartbeat")
    assert beat.status_code == 200, beat.text
    third = await client.get(f"{API}/health")
    assert third.json()["status"] == "pass"
    assert third.json()["checks"]["agents"][0]["status"] == "pass"


async def test_health_lists_every_live_instance_and_drops_a_silent_one(
    app: FastAPI, client: httpx.AsyncClient, cp: ControlPlaneCoordinator, state: ServerState
) -> None:
    from aragora.control_plane.instances import create_instance_registry

    other = create_instance_registry(cp.store, instance_id="other-instance", version="9.9.9")
    await other.register()
    checks = (await client.get(f"{API}/health")).json()["checks"]["instance:heartbeat"]
    ids = {c["componentId"]: c for c in checks}
    assert set(ids) == {observability_of(state).instances.instance_id, "other-instance"}
    assert ids["other-instance"]["details"]["version"] == "9.9.9"
    await other.deregister()
    checks = (await client.get(f"{API}/health")).json()["checks"]["instance:heartbeat"]
    assert [c["componentId"] for c in checks] == [observability_of(state).instances.instance_id]


async def test_closing_the_services_deregisters_the_instance(
    app: FastAPI, cp: ControlPlaneCoordinator, state: ServerState
) -> None:
    observability = observability_of(state)
    registry = observability.instances
    assert [i.instance_id for i in await registry.list_live(60)] == [registry.instance_id]
    await close_services(app)
    await close_services(app)  # idempotent
    assert await registry.list_live(60) == []
    assert (cp.scheduler.on_submitted, cp.scheduler.on_finished, cp.on_reaped) == ([], [], [])


async def test_agent_health_reports_breaker_calls_and_heartbeat_age(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    await register(client, "agent-1")
    await submit(client, max_retries=0)
    claimed = await claim(client, "agent-1")
    failed = await client.post(
        f"{API}/tasks/{claimed['id']}/fail",
        json={"error": "boom", "lease_token": claimed["lease_token"]},
    )
    assert failed.status_code == 200, failed.text

    response = await client.get(f"{API}/agents/agent-1/health")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/health+json"
    health = AgentHealthOut.model_validate(response.json())
    assert (health.status, health.agent_status, health.breaker_state) == ("pass", "idle", "closed")
    assert (health.calls_in_window, health.failures_in_window, health.error_rate) == (1, 1, 1.0)
    assert 0 <= health.last_heartbeat_age_s < 5

    clock.advance(cp.config.heartbeat_timeout + 1)
    await cp.reap()
    offline = AgentHealthOut.model_validate(
        (await client.get(f"{API}/agents/agent-1/health")).json()
    )
    assert (offline.status, offline.agent_status) == ("fail", "offline")
    assert offline.last_heartbeat_age_s > cp.config.heartbeat_timeout

    missing = await client.get(f"{API}/agents/no-such-agent/health")
    assert_problem(missing, 404, "not-found")


# -- alerts --------------------------------------------------------------------------
async def test_alert_engine_sees_offline_agents_and_dead_letters_at_once(
    client: httpx.AsyncClient, cp: ControlPlaneCoordinator, clock: Clock, state: ServerState
) -> None:
    alerts = observability_of(state).alerts
    received: list[AlertEvent] = []
    alerts.add_hook(received.append)
    await register(client, "agent-1")
    await submit(client, max_retries=0)
    claimed = await claim(client, "agent-1")
    await client.post(
        f"{API}/tasks/{claimed['id']}/fail",
        json={"error": "boom", "lease_token": claimed["lease_token"]},
    )
    await alerts.flush()  # the scheduler's listener handed the failed task over
    assert [e.key for e in received] == [f"task_dead_lettered:default:{claimed['id']}"]

    clock.advance(cp.config.heartbeat_timeout + 1)
    await cp.reap()
    events = await alerts.evaluate()
    assert "agent_offline:default:agent-1" in [e.key for e in events]
    assert await alerts.evaluate() == []  # fires once


# -- correlation ids -----------------------------------------------------------------
async def test_the_request_id_is_echoed_and_stored_on_the_task(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/tasks/submit",
        json={"task_type": "debate", "payload": 1},
        headers={"X-Request-ID": "req-42.abc"},
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-42.abc"
    task = (await client.get(response.headers["location"])).json()
    assert task["metadata"] == {"correlation_id": "req-42.abc"}

    own = await client.post(
        f"{API}/tasks/submit",
        json={"task_type": "debate", "payload": 1, "metadata": {"correlation_id": "mine"}},
        headers={"X-Request-ID": "req-43"},
    )
    assert (await client.get(own.headers["location"])).json()["metadata"] == {
        "correlation_id": "mine"
    }
    generated = await client.post(f"{API}/tasks/submit", json={"task_type": "t", "payload": 1})
    stored = (await client.get(generated.headers["location"])).json()["metadata"]
    assert stored == {"correlation_id": generated.headers["x-request-id"]}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The JSON lines every logger writes during the test."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging(json=True, level="info", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_log_lines_of_a_request_carry_its_correlation_id_and_never_its_token(
    client: httpx.AsyncClient, client_for: ClientFactory, json_log: io.StringIO
) -> None:
    response = await client.get(f"{API}/tasks", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 200
    stranger = await client_for("acp_" + "a" * 30 + "_bcdefg")
    refused = await stranger.get(f"{API}/tasks", headers={"X-Request-ID": "trace-me-2"})
    assert refused.status_code == 401

    lines = _lines(json_log)
    access = [line for line in lines if line["logger"] == "aragora.server.access"]
    mine = [line for line in access if line.get("correlation_id") == "trace-me-1"]
    assert len(mine) == 1
    assert (mine[0]["route"], mine[0]["status"], mine[0]["http_method"]) == (
        f"{API}/tasks",
        200,
        "GET",
    )
    assert mine[0]["duration_ms"] >= 0
    refusal = [line for line in lines if line.get("correlation_id") == "trace-me-2"]
    assert {line["logger"] for line in refusal} >= {
        "aragora.server.middleware.tenancy",
        "aragora.server.access",
    }
    text = json_log.getvalue()
    assert ADMIN_TOKEN not in text
    assert "acp_" + "a" * 30 not in text


# -- listeners -----------------------------------------------------------------------
async def test_a_failing_listener_never_fails_a_transition(
    cp: ControlPlaneCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str]] = []

    def broken(task: Task) -> None:
        raise RuntimeError("listener bug")

    cp.scheduler.on_submitted += [broken, lambda t: seen.append(("submitted", t.id))]
    cp.scheduler.on_finished += [broken, lambda t: seen.append((t.status.value, t.id))]
    reaped: list[str] = []

    def on_reaped(workspace_id: str, report: ReapReport) -> None:
        reaped.append(workspace_id)
        raise RuntimeError("listener bug")

    cp.on_reaped.append(on_reaped)
    with caplog.at_level(logging.ERROR):
        first = await cp.submit_task("t", 1)
        again = await cp.submit_task("t", 1, idempotency_key="k")
        await cp.submit_task("t", 1, idempotency_key="k")  # not created: not reported
        cancelled = await cp.cancel_task(first)
        await cp.reap()
    assert cancelled.status.value == "cancelled"
    assert seen == [("submitted", first), ("submitted", again), ("cancelled", first)]
    assert reaped == ["default"]
    assert "listener" in caplog.text
