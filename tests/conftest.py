"""Shared fixtures: a real Redis (given or started here), stores and coordinators on both."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator

STORE_KINDS = ("sqlite", "redis")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """ARAGORA_TEST_REDIS_URL, or a throw-away redis-server started for this run.

    A missing Redis is an error, never a skip.
    """
    given = os.environ.get("ARAGORA_TEST_REDIS_URL")
    if given:
        redis.Redis.from_url(given).ping()
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: install it or set ARAGORA_TEST_REDIS_URL")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="aragora-test-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the server says when it accepts connections
        if "Ready to accept connections" in line:
            break
    else:
        pytest.fail("throw-away redis-server did not start")
    proc.stdout.close()
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["ARAGORA_TEST_REDIS_URL"] = url
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def make_config(
    kind: str, redis_url: str, tmp_path: Path, **overrides: object
) -> ControlPlaneConfig:
    """A config for one test: its own SQLite file or its own Redis key prefix."""
    if kind == "sqlite":
        base = ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'state.db'}")
    else:
        base = ControlPlaneConfig(
            redis_url=redis_url, key_prefix=f"aragora:test:{uuid.uuid4().hex[:12]}:"
        )
    return base.replace(**overrides)


@pytest.fixture
def config(store_kind: str, redis_url: str, tmp_path: Path) -> Iterator[ControlPlaneConfig]:
    cfg = make_config(store_kind, redis_url, tmp_path)
    yield cfg
    if store_kind == "redis":
        _delete_prefix(redis_url, cfg.key_prefix)


def _delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


@pytest.fixture
async def cp(config: ControlPlaneConfig) -> AsyncIterator[ControlPlaneCoordinator]:
    """A coordinator without its background reaper: tests reap by hand with a moved clock."""
    async with ControlPlaneCoordinator(config, run_reaper=False) as coordinator:
        yield coordinator


class Clock:
    """Moves the store clock of one or more coordinators forward together."""

    def __init__(self, *coordinators: ControlPlaneCoordinator) -> None:
        self.coordinators = list(coordinators)
        self.offset_s = 0.0

    def attach(self, coordinator: ControlPlaneCoordinator) -> None:
        coordinator.store.set_clock_offset(self.offset_s)
        self.coordinators.append(coordinator)

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds
        for coordinator in self.coordinators:
            coordinator.store.set_clock_offset(self.offset_s)


@pytest.fixture
def clock(cp: ControlPlaneCoordinator) -> Clock:
    return Clock(cp)


CoordinatorFactory = Callable[..., Awaitable[ControlPlaneCoordinator]]


@pytest.fixture
async def cp_factory(config: ControlPlaneConfig) -> AsyncIterator[CoordinatorFactory]:
    """Open more coordinators on the same store as ``config`` (same file or key prefix),
    optionally with other settings; all are closed at the end of the test."""
    opened: list[ControlPlaneCoordinator] = []

    async def factory(**overrides: object) -> ControlPlaneCoordinator:
        coordinator = ControlPlaneCoordinator(config.replace(**overrides), run_reaper=False)
        await coordinator.start()
        opened.append(coordinator)
        return coordinator

    yield factory
    for coordinator in opened:
        await coordinator.close()
