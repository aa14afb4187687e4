"""Metrics of a real coordinator on SQLite and Redis, scraped and parsed as Prometheus
would read them."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from aragora.control_plane import (
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    TaskNotFoundError,
    TaskStatus,
)
from aragora.control_plane.instances import create_instance_registry
from aragora.observability.collector import CoordinatorCollector
from aragora.observability.metrics import ControlPlaneMetrics, instrument_store, render
from tests.conftest import Clock

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(body: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def _scrape(metrics: ControlPlaneMetrics) -> Samples:
    body, content_type = await metrics.scrape()
    assert content_type.startswith("text/plain")
    return _parse(body)


async def test_task_lifecycle_counters_and_histograms(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    metrics = ControlPlaneMetrics()
    await cp.register_agent("a", [], model="m", max_concurrent_tasks=3)
    ids = [
        await cp.submit_task("t", {}, priority="high"),
        await cp.submit_task("t", {}),
        await cp.submit_task("t", {}),
        await cp.submit_task("t", {}, workspace_id="beta"),
    ]
    for task_id in ids[:3]:
        metrics.record_submitted(await cp.get_task(task_id))
    metrics.record_submitted(await cp.get_task(ids[3], workspace_id="beta"))

    clock.advance(2)
    first = await cp.claim_task("a")
    second = await cp.claim_task("a")
    assert first is not None and first.lease_token is not None and first.id == ids[0]
    assert second is not None and second.lease_token is not None
    clock.advance(3)
    done = await cp.complete_task(first.id, "ok", lease_token=first.lease_token)
    retried = await cp.fail_task(second.id, "flaky", lease_token=second.lease_token)
    cancelled = await cp.cancel_task(ids[2])
    for task in (done, retried, cancelled):
        metrics.record_finished(task)
    assert retried.status is TaskStatus.PENDING

    samples = await _scrape(metrics)
    submitted = "aragora_tasks_submitted_total"
    assert _get(samples, submitted, workspace="default", priority="high") == 1
    assert _get(samples, submitted, workspace="default", priority="normal") == 2
    assert _get(samples, submitted, workspace="beta", priority="normal") == 1
    completed = "aragora_tasks_completed_total"
    assert _get(samples, completed, workspace="default", priority="high") == 1
    retried_name = "aragora_tasks_retried_total"
    assert _get(samples, retried_name, workspace="default", priority="normal") == 1
    cancelled_name = "aragora_tasks_cancelled_total"
    assert _get(samples, cancelled_name, workspace="default", priority="normal") == 1
    assert ("aragora_tasks_failed_total", frozenset()) not in samples

    latency = "aragora_task_latency_seconds"
    labels = {"priority": "high", "status": "completed"}
    assert _get(samples, latency + "_count", **labels) == 1
    assert 4.5 <= _get(samples, latency + "_sum", **labels) <= 10
    assert _get(samples, latency + "_bucket", le="1.0", **labels) == 0
    assert _get(samples, latency + "_bucket", le="10.0", **labels) == 1
    assert 2.5 <= _get(samples, "aragora_task_run_seconds_sum", **labels) <= 8
    assert _get(samples, latency + "_count", priority="normal", status="cancelled") == 1


async def test_store_gauges_are_computed_at_scrape_time(
    cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    metrics = ControlPlaneMetrics()
    registry = create_instance_registry(cp.store, instance_id="inst-1")
    await registry.register()
    metrics.watch_store(cp.store, instances=registry)
    await cp.register_agent("idle-1", [], model="m")
    await cp.register_agent("busy-1", ["gpu"], model="m")
    await cp.submit_task("t", {}, ["gpu"])
    await cp.submit_task("t", {}, ["gpu"])
    await cp.submit_task("t", {}, workspace_id="beta")
    assert await cp.claim_task("busy-1") is not None

    samples = await _scrape(metrics)
    assert _get(samples, "aragora_store_up") == 1
    assert _get(samples, "aragora_queue_tasks", workspace="default", status="pending") == 1
    assert _get(samples, "aragora_queue_tasks", workspace="default", status="running") == 1
    assert _get(samples, "aragora_queue_tasks", workspace="beta", status="pending") == 1
    assert _get(samples, "aragora_queue_delayed_tasks", workspace="default") == 0
    assert _get(samples, "aragora_agents", workspace="default", status="idle") == 1
    assert _get(samples, "aragora_agents", workspace="default", status="busy") == 1
    assert _get(samples, "aragora_agents", workspace="default", status="offline") == 0
    assert _get(samples, "aragora_breakers", workspace="default", state="closed") == 2
    assert _get(samples, "aragora_breakers", workspace="default", state="open") == 0
    assert _get(samples, "aragora_instances", state="live") == 1
    assert _get(samples, "aragora_instances", state="gone") == 0

    # The gauges follow the store: the next scrape sees the agent go offline.
    clock.advance(cp.config.heartbeat_timeout + 1)
    await cp.reap()
    samples = await _scrape(metrics)
    assert _get(samples, "aragora_agents", workspace="default", status="offline") == 2
    assert _get(samples, "aragora_queue_delayed_tasks", workspace="default") == 1
    assert _get(samples, "aragora_queue_tasks", workspace="default", status="pending") == 2
    assert _get(samples, "aragora_instances", state="live") == 0

    labels = {value for _name, pairs in samples for _key, value in pairs}
    assert not labels & {"idle-1", "busy-1", "inst-1"}, "no agent or instance ids as labels"


async def test_http_requests_use_route_templates_and_bounded_methods() -> None:
    metrics = ControlPlaneMetrics()
    metrics.record_http_request("get", "/api/tasks/{task_id}", 200, 0.012)
    metrics.record_http_request("GET", "/api/tasks/{task_id}", 404, 0.002)
    metrics.record_http_request("BREW", None, 405, 0.001)
    samples = _parse(render(metrics.registry)[0])
    route = "/api/tasks/{task_id}"
    assert _get(samples, "aragora_http_requests_total", method="GET", route=route, status="200")
    assert _get(samples, "aragora_http_requests_total", method="GET", route=route, status="404")
    assert _get(
        samples, "aragora_http_requests_total", method="OTHER", route="<unmatched>", status="405"
    )
    assert _get(samples, "aragora_http_request_duration_seconds_count", method="GET", route=route)


async def test_store_operations_are_timed_by_operation_and_outcome(
    cp: ControlPlaneCoordinator,
) -> None:
    metrics = ControlPlaneMetrics()
    instrument_store(cp.store, metrics)
    instrument_store(cp.store, metrics)  # idempotent
    await cp.submit_task("t", {})
    await cp.list_tasks()
    with pytest.raises(TaskNotFoundError):
        await cp.get_task("missing")
    with pytest.raises(ValueError, match="another metrics object"):
        instrument_store(cp.store, ControlPlaneMetrics())
    samples = _parse(render(metrics.registry)[0])
    name = "aragora_store_operation_duration_seconds_count"
    assert _get(samples, name, operation="submit", outcome="ok") == 1
    assert _get(samples, name, operation="list_tasks", outcome="ok") == 1
    assert _get(samples, name, operation="get_task", outcome="error") == 1


async def test_workspace_labels_are_bounded(cp: ControlPlaneCoordinator) -> None:
    metrics = ControlPlaneMetrics(max_workspace_labels=2)
    for ws in ("ws-a", "ws-b", "ws-c", "ws-d"):
        metrics.record_submitted(
            await cp.get_task(await cp.submit_task("t", {}, workspace_id=ws), workspace_id=ws)
        )
    samples = _parse(render(metrics.registry)[0])
    name = "aragora_tasks_submitted_total"
    assert _get(samples, name, workspace="ws-a", priority="normal") == 1
    assert _get(samples, name, workspace="ws-b", priority="normal") == 1
    assert _get(samples, name, workspace="_other", priority="normal") == 2

    collector = CoordinatorCollector(cp.store, max_workspace_labels=1)
    await collector.refresh()
    gauges = {
        (s.labels.get("workspace"), s.labels.get("status")): s.value
        for family in collector.collect()
        if family.name == "aragora_queue_tasks"
        for s in family.samples
    }
    assert gauges[("ws-a", "pending")] == 1
    assert gauges[("_other", "pending")] == 3
    assert {ws for ws, _ in gauges} == {"ws-a", "_other"}


async def test_an_unreachable_store_reads_as_down(config: ControlPlaneConfig) -> None:
    unopened = ControlPlaneCoordinator(config, run_reaper=False)
    metrics = ControlPlaneMetrics()
    metrics.watch_store(unopened.store)
    samples = await _scrape(metrics)
    assert _get(samples, "aragora_store_up") == 0
    assert not any(name == "aragora_queue_tasks" for name, _ in samples)


def test_metrics_live_in_their_own_registry() -> None:
    first, second = ControlPlaneMetrics(), ControlPlaneMetrics()
    first.tasks_completed.labels("ws", "normal").inc()
    assert first.registry is not second.registry
    assert REGISTRY.get_sample_value("aragora_tasks_completed_total", {"workspace": "ws"}) is None
    assert (
        _parse(render(second.registry)[0]).get(
            (
                "aragora_tasks_completed_total",
                frozenset({("workspace", "ws"), ("priority", "normal")}),
            )
        )
        is None
    )
