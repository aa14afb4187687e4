"""Redis goes away under a running server and comes back: clients get a clear 503 in
between, the server recovers by itself, and no task is lost (Redis with AOF on)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from aragora.control_plane import StoreUnavailableError, TaskStatus
from tests.e2e.conftest import Processes, free_port

RECOVERY_TIMEOUT_S = 30.0
T = TypeVar("T")


class AofRedis:
    """A redis-server of this test, persisting every write to its append-only file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is required"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            pytest.fail("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def _retrying(call: Callable[[], T]) -> T:
    """Call again on 503 for a bounded time, as a client honouring Retry-After does:
    pooled connections opened before the restart fail once each when next used."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        try:
            return call()
        except StoreUnavailableError:
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.1)  # noqa: sleep-ok (a client backing off after a 503)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as http:
        while http.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.1)  # noqa: sleep-ok (waiting for another process to reconnect)


@pytest.mark.timeout(120)
def test_clients_see_503_while_redis_is_down_and_nothing_is_lost(
    procs: Processes, aof_redis: AofRedis
) -> None:
    server = procs.server(store=aof_redis.url, env={"ARAGORA_KEY_PREFIX": "aragora:outage:"})
    with server.client() as cp:
        cp.register_agent("worker", [], "m", max_concurrent_tasks=50)
        ids = [cp.submit_task("t", {"i": i}) for i in range(20)]
        running = cp.claim_task("worker")
        assert running is not None and running.lease_token is not None

        aof_redis.kill()
        with pytest.raises(StoreUnavailableError):
            cp.submit_task("t", {"late": True})
        with httpx.Client(timeout=5.0) as http:
            ready = http.get(f"{server.url}/readyz")
        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/")

        aof_redis.start()
        _wait_ready(server.url)
        lease = running.lease_token
        _retrying(lambda: cp.complete_task(running.id, {"done": True}, lease_token=lease))
        while (task := _retrying(lambda: cp.claim_task("worker"))) is not None:
            token = task.lease_token
            assert token is not None
            _retrying(partial(cp.complete_task, task.id, {"done": True}, lease_token=token))
        finished = [_retrying(partial(cp.get_task, task_id)) for task_id in ids]
    assert [t.status for t in finished] == [TaskStatus.COMPLETED] * len(ids)
    assert all(t.result == {"done": True} for t in finished)
