"""Three ``aragora serve`` processes on one Redis, run as one distributed deployment:
every instance sees every other in health, a killed one drops out, an alert fires and
resolves exactly once across all of them (signed, to a local webhook receiver), and a
correlation id sent on submit reaches the agent's log lines for that task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aragora.alerts import verify_signature
from aragora.alerts.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.e2e.conftest import Processes, ServerProc, unique

API = "/api/control-plane"
HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 2.0
ALERT_INTERVAL_S = 0.5
DEADLINE_S = 20.0
SECRET = "e2e-webhook-secret"


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got, and whether its signature verified."""

    body: dict[str, Any]
    signed: bool


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 in a thread of its own; every POST body is
    verified against :data:`SECRET` and queued."""

    def __init__(self) -> None:
        self.deliveries: queue.Queue[Delivery] = queue.Queue()
        self.received: list[Delivery] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        assert self._ready.wait(10), "webhook receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        # Senders keep connections alive: end their handlers before the loop closes.
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._handlers.add(current)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, str] = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                signed = verify_signature(
                    SECRET,
                    body,
                    headers.get(TIMESTAMP_HEADER.lower()),
                    headers.get(SIGNATURE_HEADER.lower()),
                )
                self.deliveries.put(Delivery(json.loads(body), signed))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._handlers.discard(current)

    def expect(self, match: Callable[[dict[str, Any]], bool], timeout_s: float) -> Delivery:
        """The next delivery ``match`` accepts (every delivery is kept in ``received``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no matching alert within {timeout_s}s: {self.received}")
            try:
                delivery = self.deliveries.get(timeout=remaining)
            except queue.Empty:
                continue
            self.received.append(delivery)
            if match(delivery.body):
                return delivery

    def drain(self, for_s: float) -> None:
        """Keep receiving for ``for_s`` seconds (to catch duplicates that would follow)."""
        deadline = time.monotonic() + for_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.received.append(self.deliveries.get(timeout=remaining))
            except queue.Empty:
                return


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def health(server: ServerProc) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}{API}/health",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=5.0,
    )
    assert response.status_code in (200, 503), response.text
    body: dict[str, Any] = response.json()
    return body


def instance_ids(server: ServerProc) -> set[str]:
    return {c["componentId"] for c in health(server)["checks"].get("instance:heartbeat", [])}


def await_instances(server: ServerProc, count: int) -> set[str]:
    """Poll the health of ``server`` until it lists ``count`` live instances."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        ids = instance_ids(server)
        if len(ids) == count:
            return ids
        if time.monotonic() > deadline:
            pytest.fail(f"health listed {sorted(ids)}, not {count} instances:\n{server.log()}")
        time.sleep(0.1)  # noqa: sleep-ok (other processes beat on their own; no long-poll)


def test_three_instances_share_health_alerts_and_correlation_ids(
    procs: Processes, receiver: WebhookReceiver
) -> None:
    env = {
        "ARAGORA_KEY_PREFIX": procs.redis_prefix(),
        "ARAGORA_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL_S),
        "ARAGORA_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "ARAGORA_ALERT_INTERVAL_S": str(ALERT_INTERVAL_S),
        "ARAGORA_ALERT_WEBHOOK_URL": receiver.url,
        "ARAGORA_ALERT_WEBHOOK_SECRET": SECRET,
    }
    servers = [procs.server(store=procs.redis_url, env=env, wait=False) for _ in range(3)]
    for server in servers:
        server.wait_ready()
    first, _, doomed = servers

    # Every instance registers at startup: any one lists all three.
    all_ids = await_instances(first, 3)
    assert instance_ids(servers[1]) == all_ids

    # A correlation id sent on submit reaches the agent's log lines for that task.
    cap = unique("obs")
    agent_env = {"ARAGORA_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL_S)}
    agent = procs.agent(first, capabilities=[cap], env=agent_env)
    correlation = f"e2e-{uuid.uuid4().hex}"
    submitted = httpx.post(
        f"{servers[1].url}{API}/tasks/submit",
        json={"task_type": "echo", "payload": {"label": "x"}, "required_capabilities": [cap]},
        headers={
            "Authorization": f"Bearer {servers[1].role_token('submitter')}",
            "X-Request-ID": correlation,
        },
        timeout=5.0,
    )
    assert submitted.status_code == 201, submitted.text
    assert submitted.headers["x-request-id"] == correlation
    task_id = submitted.json()["task_id"]
    agent.expect(f"RAN {task_id}")
    with first.client() as admin:
        done = admin.wait_for_task(task_id, DEADLINE_S)
    assert done.status.value == "completed"
    assert done.metadata["correlation_id"] == correlation
    task_lines = [line for line in agent.log().splitlines() if task_id in line]
    assert any("task_started" in line for line in task_lines), agent.log()
    assert task_lines and all(correlation in line for line in task_lines), task_lines

    # SIGKILL one server: the others stop listing it once it is silent for the timeout.
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    remaining = await_instances(first, 2)
    assert remaining < all_ids

    # An agent going offline fires one alert across the three servers, then resolves once.
    key = f"agent_offline:default:{agent.agent_id}"
    agent.stop(signal.SIGKILL)
    fired = receiver.expect(lambda b: b["key"] == key and b["status"] == "firing", DEADLINE_S)
    assert fired.signed
    assert fired.body["kind"] == "agent_offline"
    back = procs.agent(first, capabilities=[cap], agent_id=agent.agent_id, env=agent_env)
    resolved = receiver.expect(lambda b: b["key"] == key and b["status"] == "resolved", DEADLINE_S)
    assert resolved.signed
    receiver.drain(4 * ALERT_INTERVAL_S)  # every engine evaluates again meanwhile
    statuses = [d.body["status"] for d in receiver.received if d.body["key"] == key]
    assert statuses == ["firing", "resolved"]
    assert all(d.signed for d in receiver.received)
    back.stop()
