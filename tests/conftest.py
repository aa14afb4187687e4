"""Shared fixtures: a real Redis and a real Redis Cluster (given or started here), and
stores and coordinators on SQLite, Redis and the cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.store.redis import is_cluster_url, parse_cluster_url

STORE_KINDS = ("sqlite", "redis", "cluster")
"""Every store a ``store_kind`` test can run on."""

NEVER_ON_CLUSTER = (
    "tests/audit/test_tamper.py",
    "tests/server/test_audit.py",
    "tests/control_plane/test_encryption.py",
)
"""Tests that read or edit keys through a single-server client of their own; every other
test that uses ``store_kind`` runs on SQLite, Redis and the cluster."""

CLUSTER_MASTERS = 3
CLUSTER_START_DEADLINE_S = 30.0
_ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ARAGORA_TEST_REDIS_CLUSTER_URL, or a throw-away 3-master cluster started here.

    A cluster that does not start is an error, never a skip.
    """
    given = os.environ.get("ARAGORA_TEST_REDIS_CLUSTER_URL")
    if given:
        client = _cluster_client(given)
        client.ping()
        client.close()
        yield given
        return
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail("redis-server and redis-cli are needed to start a test cluster")
    workdir = tmp_path_factory.mktemp("redis-cluster")
    ports = _free_cluster_ports(CLUSTER_MASTERS)
    procs = [_start_cluster_node(server, port, workdir) for port in ports]
    try:
        _create_cluster(cli, ports, workdir)
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)
        os.environ["ARAGORA_TEST_REDIS_CLUSTER_URL"] = url
        yield url
    finally:
        os.environ.pop("ARAGORA_TEST_REDIS_CLUSTER_URL", None)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _free_cluster_ports(count: int) -> list[int]:
    """``count`` ports that are free together with their cluster bus ports (port + 10000,
    so the port must be at most 55535)."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port > 55535 or port in ports or port + 10000 in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _start_cluster_node(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / f"node-{port}.log").open("wb")
    with log:
        return subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / f"nodes-{port}.conf"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _create_cluster(cli: str, ports: list[int], workdir: Path) -> None:
    """Wait for the nodes, join them into one cluster and wait until every node says
    ``cluster_state:ok``; fail the run with the nodes' logs if that takes too long."""
    deadline = time.monotonic() + CLUSTER_START_DEADLINE_S

    def wait_for(what: str, ready: Callable[[], bool]) -> None:
        while not ready():
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text(errors="replace") for p in workdir.glob("*.log"))
                pytest.fail(f"test Redis Cluster: {what} did not happen in time\n{logs}")
            time.sleep(0.05)  # noqa: sleep-ok (polling child redis-server processes)

    def answers(port: int) -> bool:
        try:
            with redis.Redis(port=port) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for("the nodes starting", lambda: all(answers(p) for p in ports))
    create = subprocess.run(
        [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=CLUSTER_START_DEADLINE_S,
        check=False,
    )
    if create.returncode != 0:
        pytest.fail(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")

    def all_ok() -> bool:
        return all(_cluster_state(p) == "ok" for p in ports)

    wait_for("cluster_state:ok on every node", all_ok)


def _cluster_state(port: int) -> str:
    try:
        with redis.Redis(port=port) as client:
            info = client.execute_command("CLUSTER INFO")
    except redis.RedisError:
        return ""
    if isinstance(info, bytes):  # unparsed "field:value" lines
        lines = info.decode().splitlines()
        info = dict(line.split(":", 1) for line in lines if ":" in line)
    state = info.get("cluster_state", "") if isinstance(info, dict) else ""
    return state.decode() if isinstance(state, bytes) else str(state)


def _cluster_client(url: str) -> Any:
    """A synchronous cluster client (``redis.cluster.RedisCluster``, whose methods are
    untyped in some redis-py releases, hence ``Any``)."""
    address = parse_cluster_url(url)
    cluster_class: Any = RedisCluster
    node_class: Any = ClusterNode
    return cluster_class(
        startup_nodes=[node_class(host, port) for host, port in address.nodes],
        username=address.username,
        password=address.password,
        ssl=address.ssl,
    )


def _store_kinds_for(path: Path) -> tuple[str, ...]:
    if path.resolve().relative_to(_ROOT).as_posix().startswith(NEVER_ON_CLUSTER):
        return tuple(kind for kind in STORE_KINDS if kind != "cluster")
    return STORE_KINDS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses ``store_kind`` once per store kind (see
    ``NEVER_ON_CLUSTER``), unless the test names its own kinds."""
    if "store_kind" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "store_kind" in names:
            return
    kinds = _store_kinds_for(metafunc.definition.path)
    metafunc.parametrize("store_kind", kinds, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store_redis_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of the Redis (or Redis Cluster) of ``store_kind`` ("" for SQLite); the
    cluster is started only when a test needs it."""
    if store_kind == "sqlite":
        return ""
    url: str = request.getfixturevalue("cluster_url" if store_kind == "cluster" else "redis_url")
    return url


def make_config(
    kind: str, redis_url: str, tmp_path: Path, **overrides: object
) -> ControlPlaneConfig:
    """A config for one test: its own SQLite file or its own Redis key prefix (on one
    server or a cluster, whichever ``redis_url`` names)."""
    if kind == "sqlite":
        base = ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'state.db'}")
    else:
        base = ControlPlaneConfig(
            redis_url=redis_url, key_prefix=f"aragora:test:{uuid.uuid4().hex[:12]}:"
        )
    return base.replace(**overrides)


@pytest.fixture
def config(store_kind: str, store_redis_url: str, tmp_path: Path) -> Iterator[ControlPlaneConfig]:
    cfg = make_config(store_kind, store_redis_url, tmp_path)
    yield cfg
    if store_kind != "sqlite":
        _delete_prefix(store_redis_url, cfg.key_prefix)


def _delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``; on a cluster, node by node and slot by slot."""
    if is_cluster_url(url):
        cluster: Any = _cluster_client(url)
        try:
            by_slot: dict[int, list[bytes]] = {}
            for key in cluster.scan_iter(match=prefix + "*", count=1000):
                by_slot.setdefault(cluster.keyslot(key), []).append(key)
            for keys in by_slot.values():
                for i in range(0, len(keys), 500):
                    cluster.delete(*keys[i : i + 500])
        finally:
            cluster.close()
        return
    client = redis.Redis.from_url(url)
    with client:
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
