"""Health (application/health+json) and the liveness and readiness probes."""

from __future__ import annotations

import httpx

import aragora
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.server import create_app
from aragora.server.schemas import HealthOut
from aragora.server.state import ServerState
from tests.server.conftest import (
    API,
    claim,
    http_client,
    register,
    started_app,
    submit,
)

HEALTH_JSON = "application/health+json"


async def test_health_passes_with_store_instance_agent_and_queue_checks(
    client: httpx.AsyncClient, state: ServerState
) -> None:
    await register(client, "agent-1")
    await register(client, "agent-2")
    await submit(client)
    await submit(client, priority="high")
    await claim(client, "agent-1")

    response = await client.get(f"{API}/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    report = HealthOut.model_validate(response.json())
    assert report.status == "pass"
    assert set(report.checks) == {"store", "instance:heartbeat", "agents", "queues"}
    checks = response.json()["checks"]
    store = checks["store"][0]
    assert store["status"] == "pass"
    assert store["observedUnit"] == "ms"
    assert store["observedValue"] >= 0
    assert state.observability is not None
    [instance] = checks["instance:heartbeat"]
    assert instance["componentId"] == state.observability.instances.instance_id
    assert instance["details"]["version"] == aragora.__version__
    assert instance["time"].endswith("Z")
    agents = checks["agents"][0]
    assert agents["observedValue"] == 2
    assert agents["details"]["by_status"] == {"busy": 1, "idle": 1, "draining": 0, "offline": 0}
    assert agents["details"]["open_breakers"] == 0
    queues = checks["queues"][0]
    assert (queues["observedValue"], queues["observedUnit"]) == (1, "tasks")
    assert queues["details"]["running"] == 1
    by_priority = queues["details"]["by_priority"]
    assert by_priority["normal"]["depth"] == 1
    assert by_priority["normal"]["oldest_pending_age_s"] >= 0
    assert by_priority["high"] == {"depth": 0, "oldest_pending_age_s": None}
    assert queues["details"]["scan_truncated"] is False


async def test_livez_and_readyz_pass(client: httpx.AsyncClient) -> None:
    live = await client.get("/livez")
    assert (live.status_code, live.headers["content-type"]) == (200, HEALTH_JSON)
    assert live.json()["status"] == "pass"
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.headers["content-type"]) == (200, HEALTH_JSON)
    assert ready.json()["checks"]["store"][0]["status"] == "pass"


async def test_readyz_fails_once_shutdown_begins(
    client: httpx.AsyncClient, state: ServerState
) -> None:
    state.begin_shutdown()
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == HEALTH_JSON
    assert ready.json()["status"] == "fail"
    assert (await client.get("/livez")).status_code == 200


async def test_readyz_fails_when_the_coordinator_is_closed(
    config: ControlPlaneConfig,
) -> None:
    coordinator = ControlPlaneCoordinator(config, run_reaper=False)
    await coordinator.start()
    app = await started_app(coordinator)
    async with http_client(app) as client:
        assert (await client.get(f"{API}/health")).status_code == 200
        await coordinator.close()
        # Only the open probe is asked: an authenticated request needs the store, and a
        # closed Redis store's client would open a new connection for it.
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == HEALTH_JSON
        assert ready.json()["checks"]["store"][0]["status"] == "fail"


async def test_an_app_without_a_running_coordinator_answers_503(
    config: ControlPlaneConfig,
) -> None:
    app = create_app(config)  # its lifespan never ran
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get(f"{API}/tasks")
        assert response.status_code == 503
        assert response.json()["type"].endswith("store-unavailable")
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/livez")).status_code == 200
