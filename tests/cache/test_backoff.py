"""Background loops back off exponentially (with jitter, capped) while the store fails,
return to their interval after a good pass, and log once per change of state."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from pathlib import Path

import pytest

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.control_plane.backoff import LoopBackoff, backoff_delay_s
from aragora.control_plane.errors import StoreUnavailableError
from aragora.control_plane.instances import InstancePresence, create_instance_registry
from aragora.store import create_store

DOWN = StoreUnavailableError("redis: connection refused")


def test_the_wait_doubles_per_failure_up_to_the_cap_and_resets_on_success() -> None:
    backoff = LoopBackoff("reaper", 1.0, max_s=30.0, rand=lambda: 0.0)

    waits = [backoff.failed(DOWN) for _ in range(7)]
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.failures == 7
    assert backoff.succeeded() == 1.0
    assert backoff.failures == 0
    assert backoff.failed(DOWN) == 2.0


def test_jitter_spreads_the_wait_below_the_step_but_never_below_the_interval() -> None:
    lowest = LoopBackoff("x", 1.0, max_s=30.0, jitter=0.5, rand=lambda: 1.0)
    assert [lowest.failed(DOWN) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 15.0]
    assert backoff_delay_s(3, 1.0, 60.0, rand=lambda: 0.5) == pytest.approx(3.0)
    assert backoff_delay_s(1000, 1.0, 60.0, rand=lambda: 0.0) == 60.0


def test_a_streak_of_failures_logs_once_and_the_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.backoff")
    backoff = LoopBackoff("alert evaluation", 1.0, log=log)
    with caplog.at_level(logging.INFO, logger="test.backoff"):
        for _ in range(5):
            backoff.failed(DOWN)
        backoff.succeeded()
        backoff.succeeded()

    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("alert evaluation failed (StoreUnavailableError")
    assert messages[1] == "alert evaluation recovered after 5 failed attempt(s)"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopBackoff("x", 0.0)
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay_s(0, 1.0, 2.0)


async def test_instance_beats_back_off_while_redis_is_down(tmp_path: Path) -> None:
    """The real presence loop on a Redis that dies: the waits between beats grow
    (recorded instead of slept), capped, with no sleep in the test."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is required"
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
            registry = create_instance_registry(cp.store)
            presence = InstancePresence(registry, interval_s=1.0, timeout_s=12.0)
            presence.backoff = LoopBackoff("instance beat", 1.0, max_s=6.0, rand=lambda: 0.0)
            waits: list[float] = []
            redis_down = asyncio.Event()
            enough = asyncio.Event()

            async def record(delay_s: float) -> None:
                waits.append(delay_s)
                await redis_down.wait()  # no beat runs before Redis is gone
                if len(waits) == 6:
                    enough.set()
                    await asyncio.Event().wait()  # parked until the loop is cancelled

            presence.backoff.sleep = record
            async with presence:
                proc.kill()
                await proc.wait()
                redis_down.set()
                async with asyncio.timeout(5):
                    await enough.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert waits == [1.0, 2.0, 4.0, 6.0, 6.0, 6.0]
    assert presence.backoff.failures == 5


def test_presence_backs_off_at_most_half_the_heartbeat_timeout(tmp_path: Path) -> None:
    """Longer waits would let the other instances mark this one gone once Redis is back."""
    store = create_store(ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'cp.db'}"))
    presence = InstancePresence(
        create_instance_registry(store), interval_s=1.0, timeout_s=12.0, backoff_max_s=30.0
    )
    waits = [presence.backoff.failed(DOWN) for _ in range(20)]
    assert max(waits) <= 6.0
    assert presence.backoff.max_s == 6.0
