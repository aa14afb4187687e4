"""Redis-only behaviour: deployment isolation, cluster-ready keys, failures at the boundary."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aragora.control_plane import (
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    StoreUnavailableError,
    TaskNotFoundError,
)
from tests.conftest import _delete_prefix, make_config


@pytest.fixture
async def two_deployments(
    redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ControlPlaneCoordinator, ControlPlaneCoordinator]]:
    one = make_config("redis", redis_url, tmp_path)
    two = make_config("redis", redis_url, tmp_path)
    async with (
        ControlPlaneCoordinator(one, run_reaper=False) as a,
        ControlPlaneCoordinator(two, run_reaper=False) as b,
    ):
        yield a, b
    _delete_prefix(redis_url, one.key_prefix)
    _delete_prefix(redis_url, two.key_prefix)


async def test_deployments_with_different_key_prefixes_do_not_see_each_other(
    two_deployments: tuple[ControlPlaneCoordinator, ControlPlaneCoordinator],
) -> None:
    a, b = two_deployments
    await a.register_agent("agent", [], model="m")
    await b.register_agent("agent", [], model="m")
    task_id = await a.submit_task("t", {}, idempotency_key="same")
    assert await b.submit_task("t", {}, idempotency_key="same") != task_id
    with pytest.raises(TaskNotFoundError):
        await b.get_task(task_id)
    claimed = await b.claim_task("agent")
    assert claimed is not None and claimed.id != task_id
    assert (await a.store.counts("default")).pending == 1


async def test_every_key_of_a_workspace_shares_its_hash_tag(redis_url: str, tmp_path: Path) -> None:
    config = make_config("redis", redis_url, tmp_path)
    try:
        async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
            for workspace in ("alpha", "beta"):
                await cp.register_agent("a", ["x"], model="m", workspace_id=workspace)
                task_id = await cp.submit_task(
                    "t", {}, ["x"], workspace_id=workspace, idempotency_key="k"
                )
                task = await cp.claim_task("a", workspace_id=workspace)
                assert task is not None and task.lease_token
                await cp.fail_task(
                    task_id, "x", lease_token=task.lease_token, workspace_id=workspace
                )
                await cp.cancel_task(task_id, workspace_id=workspace)
            client = aioredis.Redis.from_url(redis_url, decode_responses=True)
            keys = [k async for k in client.scan_iter(match=config.key_prefix + "*")]
            await client.aclose()
        per_workspace = [k for k in keys if k != config.key_prefix + "workspaces"]
        assert per_workspace
        for key in per_workspace:
            tag = key[len(config.key_prefix) :].split("}")[0] + "}"
            assert tag in ("{alpha}", "{beta}"), key
    finally:
        _delete_prefix(redis_url, config.key_prefix)


async def test_unreachable_redis_is_a_store_error_not_a_driver_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ControlPlaneConfig(redis_url=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailableError):
        async with ControlPlaneCoordinator(config, run_reaper=False):
            pass


async def test_waiters_recover_when_the_notification_connection_is_killed(
    redis_url: str, tmp_path: Path
) -> None:
    config = make_config("redis", redis_url, tmp_path).replace(
        key_prefix=f"aragora:test:{uuid.uuid4().hex[:12]}:"
    )
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            ControlPlaneCoordinator(config, run_reaper=False) as waiter,
            ControlPlaneCoordinator(config, run_reaper=False) as worker,
        ):
            await worker.register_agent("a", [], model="m")
            task_id = await waiter.submit_task("t", {})
            waiting = asyncio.create_task(waiter.wait_for_result(task_id, timeout=20))
            await asyncio.sleep(0)
            await admin.client_kill_filter(_type="pubsub")
            task = await worker.claim_task("a")
            assert task is not None and task.lease_token
            await worker.complete_task(task_id, "done", lease_token=task.lease_token)
            assert await asyncio.wait_for(waiting, 15) == "done"
    finally:
        await admin.aclose()
        _delete_prefix(redis_url, config.key_prefix)
