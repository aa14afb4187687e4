"""Liveness and readiness checks, and the health report of a workspace."""

from __future__ import annotations

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.control_plane.health import HealthStatus


async def test_ready_while_the_store_answers(cp: ControlPlaneCoordinator) -> None:
    assert cp.health.liveness().status is HealthStatus.PASS
    check = await cp.health.readiness()
    assert check.status is HealthStatus.PASS and check.observed_unit == "ms"


async def test_not_ready_once_closing(config: ControlPlaneConfig) -> None:
    cp = await ControlPlaneCoordinator.create(config, run_reaper=False)
    await cp.close()
    await cp.close()  # idempotent
    check = await cp.health.readiness()
    assert check.status is HealthStatus.FAIL and check.output == "shutting down"


async def test_report_counts_agents_and_queue(cp: ControlPlaneCoordinator) -> None:
    await cp.register_agent("a", [], model="m")
    await cp.register_agent("b", [], model="m")
    await cp.submit_task("t", {})
    await cp.submit_task("t", {})
    assert await cp.claim_task("a") is not None
    report = await cp.health.report()
    assert report.status is HealthStatus.PASS
    checks = {c.component: c for c in report.checks}
    assert checks["agents"].details == {"busy": 1, "idle": 1}
    assert checks["queue"].details == {"pending": 1, "delayed": 0, "running": 1}


async def test_background_reaper_runs_on_its_own(config: ControlPlaneConfig) -> None:
    fast = config.replace(heartbeat_timeout=2.0, heartbeat_interval=1.0, reap_interval_s=0.01)
    async with ControlPlaneCoordinator(fast) as cp:
        await cp.register_agent("a", [], model="m")
        await cp.submit_task("t", {})
        assert await cp.claim_task("a") is not None
        cp.store.set_clock_offset(5.0)
        async with cp.store.watch_ready("default") as watch:
            while (await cp.get_agent("a")).status.value != "offline":
                await watch.wait(5.0)
        assert (await cp.store.counts("default")).running == 0
