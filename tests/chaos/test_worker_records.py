"""The harness's agent client records every complete and fail the server answered,
whether sent one at a time or in a batch, with the attempt it belonged to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos.execlog import ExecutionLog, read_events
from chaos.worker import RecordingClient

from aragora.client import ControlPlaneClient
from aragora.control_plane.errors import ConflictError
from tests.e2e.conftest import Processes, ServerProc


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[ServerProc]:
    processes = Processes(tmp_path, redis_url)
    try:
        yield processes.server()
    finally:
        processes.close()


async def test_batched_and_single_reports_are_recorded_with_their_attempt(
    server: ServerProc, tmp_path: Path
) -> None:
    with ControlPlaneClient(server.url, server.token) as admin:
        ids = [admin.submit_task("work", {"chaos": n}) for n in range(3)]
    log_path = tmp_path / "agent.exec.jsonl"
    log = ExecutionLog(log_path)
    async with RecordingClient(log, "rec", server.url, server.role_token("agent")) as client:
        await client.register_agent("rec", ["work"], "m", max_concurrent_tasks=3)
        leased = await client.claim_tasks("rec", max_tasks=3)
        assert sorted(t.id for t in leased) == sorted(ids)
        first, second, third = leased
        assert first.lease_token and second.lease_token and third.lease_token
        await client.complete_tasks(
            [(first.id, {"ok": 1}, first.lease_token, None), (second.id, {}, "forged", None)]
        )
        await client.fail_task(third.id, "boom", lease_token=third.lease_token, retryable=False)
        with pytest.raises(ConflictError):
            await client.complete_task(first.id, {}, lease_token=first.lease_token)
    log.close()

    records = [
        (e["kind"], e["task"], e["attempt"], e["outcome"], e["status"])
        for e in read_events(log_path)
    ]
    assert records == [
        ("complete", first.id, 1, "accepted", 200),
        ("complete", second.id, 0, "rejected", 409),
        ("fail", third.id, 1, "accepted", 200),
        ("complete", first.id, 1, "rejected", 409),
    ]
