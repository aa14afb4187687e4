"""Redis Cluster specifics: one slot per workspace, workspaces spread over nodes,
notifications and tasks crossing coordinators and nodes, cluster URLs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.control_plane.errors import ConfigError, StoreUnavailableError
from aragora.control_plane.models import TaskPriority, TaskStatus, WorkspaceLimits
from aragora.store import NewTask, create_store
from aragora.store.redis import ClusterAddress, RedisStore, parse_cluster_url
from tests.conftest import _delete_prefix, _free_port, make_config


@pytest.fixture
def cluster_config(cluster_url: str, tmp_path: Path) -> Iterator[ControlPlaneConfig]:
    config = make_config("cluster", cluster_url, tmp_path)
    yield config
    _delete_prefix(cluster_url, config.key_prefix)


@pytest.fixture
async def admin(cluster_url: str) -> AsyncIterator[RedisCluster]:
    address = parse_cluster_url(cluster_url)
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
        decode_responses=True,
    )
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def two_coordinators(
    cluster_config: ControlPlaneConfig,
) -> AsyncIterator[tuple[ControlPlaneCoordinator, ControlPlaneCoordinator]]:
    async with (
        ControlPlaneCoordinator(cluster_config, run_reaper=False) as one,
        ControlPlaneCoordinator(cluster_config, run_reaper=False) as two,
    ):
        yield one, two


def _node_of(admin: RedisCluster, config: ControlPlaneConfig, workspace_id: str) -> str:
    """``host:port`` of the primary that holds the workspace's slot."""
    node = admin.get_node_from_key(f"{config.key_prefix}{{{workspace_id}}}:")
    assert node is not None
    return str(node.name)


def _workspace_on(admin: RedisCluster, config: ControlPlaneConfig, wanted: bool, node: str) -> str:
    """A workspace name whose slot is (``wanted``) or is not on ``node``."""
    for i in range(1000):
        name = f"ws-{i}"
        if (_node_of(admin, config, name) == node) == wanted:
            return name
    raise AssertionError("no such workspace name among the first 1000")


async def _exercise(cp: ControlPlaneCoordinator, workspace_id: str) -> None:
    """Touch every kind of key a workspace has."""
    await cp.set_workspace_limits(workspace_id, WorkspaceLimits(budget=100.0))
    await cp.register_agent("a", ["x"], model="m", workspace_id=workspace_id)
    first = await cp.submit_task(
        "t", {}, ["x"], workspace_id=workspace_id, idempotency_key="k", cost_estimate=1.0
    )
    task = await cp.claim_task("a", workspace_id=workspace_id)
    assert task is not None and task.lease_token
    await cp.fail_task(first, "boom", lease_token=task.lease_token, workspace_id=workspace_id)
    second = await cp.submit_task("t", {}, workspace_id=workspace_id)
    task = await cp.claim_task("a", workspace_id=workspace_id)
    assert task is not None and task.id == second and task.lease_token
    await cp.complete_task(
        second, {"ok": 1}, lease_token=task.lease_token, cost=0.5, workspace_id=workspace_id
    )
    await cp.cancel_task(first, workspace_id=workspace_id)


async def test_every_key_of_a_workspace_is_in_one_slot(
    cluster_config: ControlPlaneConfig, admin: RedisCluster
) -> None:
    async with ControlPlaneCoordinator(cluster_config, run_reaper=False) as cp:
        await _exercise(cp, "alpha")
    keys = [
        key
        async for key in admin.scan_iter(match=cluster_config.key_prefix + "*", count=1000)
        if key != cluster_config.key_prefix + "workspaces"
    ]
    assert len(keys) > 10
    slots = {int(await admin.execute_command("CLUSTER KEYSLOT", key)) for key in keys}
    assert slots == {admin.keyslot(f"{cluster_config.key_prefix}{{alpha}}:")}


async def test_two_workspaces_live_on_different_nodes(
    cluster_config: ControlPlaneConfig, admin: RedisCluster
) -> None:
    first = "ws-0"
    node = _node_of(admin, cluster_config, first)
    second = _workspace_on(admin, cluster_config, False, node)
    async with ControlPlaneCoordinator(cluster_config, run_reaper=False) as cp:
        for workspace_id in (first, second):
            await _exercise(cp, workspace_id)
        assert (await cp.store.counts(first)).completed == 1
        assert (await cp.store.counts(second)).completed == 1
    found: dict[str, set[str]] = {}
    for primary in admin.get_primaries():
        with redis.Redis(host=primary.host, port=int(primary.port), decode_responses=True) as plain:
            for key in plain.scan_iter(match=cluster_config.key_prefix + "{*", count=1000):
                workspace_id = key[len(cluster_config.key_prefix) + 1 :].split("}")[0]
                found.setdefault(workspace_id, set()).add(primary.name)
    assert found == {first: {node}, second: {_node_of(admin, cluster_config, second)}}
    assert found[first] != found[second]


async def test_a_waiting_claim_is_woken_by_a_submit_on_another_coordinator_and_node(
    two_coordinators: tuple[ControlPlaneCoordinator, ControlPlaneCoordinator],
    admin: RedisCluster,
) -> None:
    waiter, submitter = two_coordinators
    assert isinstance(waiter.store, RedisStore) and waiter.store.is_cluster
    listening = waiter.store.notification_node
    assert listening is not None
    # The workspace's slot is on another node than the one the waiter subscribes on,
    # so the wake-up can only come from the cluster forwarding the PUBLISH.
    workspace_id = _workspace_on(admin, waiter.config, False, f"{listening[0]}:{listening[1]}")
    await waiter.register_agent("a", [], model="m", workspace_id=workspace_id)
    claim = asyncio.create_task(waiter.claim_task("a", wait_s=30, workspace_id=workspace_id))
    await asyncio.sleep(0.2)  # noqa: sleep-ok (let the claim find the queue empty and wait)
    assert not claim.done()
    loop = asyncio.get_running_loop()
    started = loop.time()
    task_id = await submitter.submit_task("t", {"n": 1}, workspace_id=workspace_id)
    task = await asyncio.wait_for(claim, timeout=10)
    assert task is not None and task.id == task_id
    assert loop.time() - started < 5  # woken, not timed out

    result = asyncio.create_task(
        submitter.wait_for_result(task_id, timeout=30, workspace_id=workspace_id)
    )
    assert task.lease_token
    await waiter.complete_task(
        task_id, {"answer": 42}, lease_token=task.lease_token, workspace_id=workspace_id
    )
    assert await asyncio.wait_for(result, timeout=10) == {"answer": 42}


async def test_a_task_submitted_on_one_coordinator_is_claimed_on_another(
    two_coordinators: tuple[ControlPlaneCoordinator, ControlPlaneCoordinator],
) -> None:
    one, two = two_coordinators
    await two.register_agent("worker", ["gpu"], model="m", workspace_id="shared")
    task_id = await one.submit_task("t", {"x": 1}, ["gpu"], workspace_id="shared")
    task = await two.claim_task("worker", workspace_id="shared")
    assert task is not None and task.id == task_id and task.payload == {"x": 1}
    assert (await one.get_task(task_id, workspace_id="shared")).status is TaskStatus.RUNNING


async def test_a_batch_spanning_nodes_runs_every_item_even_when_scripts_were_flushed(
    cluster_config: ControlPlaneConfig, admin: RedisCluster
) -> None:
    first = "ws-0"
    second = _workspace_on(admin, cluster_config, False, _node_of(admin, cluster_config, first))
    store = create_store(cluster_config)
    await store.open()
    try:
        await admin.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
        tasks = [
            NewTask(
                id=uuid.uuid4().hex,
                workspace_id=workspace_id,
                task_type="t",
                payload={"i": i},
                priority=TaskPriority.NORMAL,
                required_capabilities=(),
                timeout_s=60.0,
                max_retries=0,
            )
            for i in range(6)
            for workspace_id in (first, second)
        ]
        outcomes = await store.submit_many(tasks)
        assert all(isinstance(o, tuple) and o[1] for o in outcomes)
        assert (await store.counts(first)).pending == 6
        assert (await store.counts(second)).pending == 6
        assert set(await store.list_workspaces()) == {first, second}
    finally:
        await store.close()


async def test_notifications_fall_back_to_the_next_node(cluster_url: str, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{_free_port()}"
    url = cluster_url.replace("redis+cluster://", f"redis+cluster://{dead},")
    config = make_config("cluster", url, tmp_path)
    try:
        async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
            assert isinstance(cp.store, RedisStore)
            assert cp.store.notification_node not in (None, ("127.0.0.1", int(dead[10:])))
            await cp.register_agent("a", [], model="m")
            claim = asyncio.create_task(cp.claim_task("a", wait_s=30))
            await asyncio.sleep(0.1)  # noqa: sleep-ok (let the claim start waiting)
            task_id = await cp.submit_task("t", {})
            task = await asyncio.wait_for(claim, timeout=10)
            assert task is not None and task.id == task_id
    finally:
        _delete_prefix(cluster_url, config.key_prefix)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://h1:7000", ClusterAddress((("h1", 7000),))),
        (
            "redis+cluster://h1:7000,h2:7001,h3/0",
            ClusterAddress((("h1", 7000), ("h2", 7001), ("h3", 6379))),
        ),
        (
            "rediss+cluster://user:p%40ss@[::1]:7000,10.0.0.2:7001",
            ClusterAddress((("::1", 7000), ("10.0.0.2", 7001)), "user", "p@ss", ssl=True),
        ),
        ("redis+cluster://:secret@h:1/", ClusterAddress((("h", 1),), None, "secret")),
    ],
)
def test_cluster_urls_are_parsed(url: str, expected: ClusterAddress) -> None:
    assert parse_cluster_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://h:7000/1",
        "redis+cluster://h:7000?timeout=1",
        "redis+cluster://h:port",
        "redis+cluster://h:1,,h:2",
        "redis://h:7000",
    ],
)
def test_bad_cluster_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_cluster_url(url)


def test_cluster_urls_are_accepted_as_store_urls() -> None:
    for url in ("redis+cluster://h:7000", "rediss+cluster://h:7000,h:7001"):
        store = create_store(ControlPlaneConfig(store_url=url))
        assert isinstance(store, RedisStore) and store.is_cluster
    assert not RedisStore(ControlPlaneConfig(), "redis://h:6379/0").is_cluster
    with pytest.raises(ConfigError):
        ControlPlaneConfig(store_url="memcached://h:1")


async def test_an_unreachable_cluster_is_a_store_error() -> None:
    config = ControlPlaneConfig(redis_url=f"redis+cluster://127.0.0.1:{_free_port()}")
    with pytest.raises(StoreUnavailableError):
        async with ControlPlaneCoordinator(config, run_reaper=False):
            pass
