"""Fixtures of the alert tests: a real HTTP receiver on 127.0.0.1 and engines that are
closed at the end of each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from aragora.alerts import AlertEngine, AlertEvent, AlertThresholds, WebhookSink
from aragora.control_plane import ControlPlaneCoordinator

SECRET = b"webhook-test-secret"


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver read it off the socket."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class WebhookReceiver:
    """A tiny HTTP/1.1 server: answers each request with the next of ``statuses``
    (then 200) and remembers what it received."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self._statuses = list(statuses)
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks/alerts"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer_next(self, *statuses: int) -> None:
        self._statuses.extend(statuses)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """The first ``count`` requests, once they have arrived."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests[:count]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self._statuses.pop(0) if self._statuses else 200
            # Recorded before answering, so a sender that saw the answer finds it here.
            async with self._changed:
                self.requests.append(Received(method, path, headers, body, status))
                self._changed.notify_all()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver()
    await server.start()
    yield server
    await server.close()


EngineFactory = Callable[..., Awaitable[AlertEngine]]


@pytest.fixture
async def engine_factory() -> AsyncIterator[EngineFactory]:
    """Start an engine without its schedule (tests call ``evaluate``); closed at the end."""
    opened: list[AlertEngine] = []

    async def factory(
        coordinator: ControlPlaneCoordinator,
        *,
        events: list[AlertEvent] | None = None,
        webhook_url: str | None = None,
        **kwargs: Any,
    ) -> AlertEngine:
        sinks = list(kwargs.pop("sinks", []))
        if webhook_url is not None:
            sinks.append(WebhookSink(webhook_url, SECRET, backoff_base_s=0.01, backoff_max_s=0.05))
        hooks = list(kwargs.pop("hooks", []))
        if events is not None:
            hooks.append(events.append)
        kwargs.setdefault("thresholds", AlertThresholds())
        engine = AlertEngine(coordinator, sinks=sinks, hooks=hooks, run_schedule=False, **kwargs)
        await engine.start()
        opened.append(engine)
        return engine

    yield factory
    for engine in opened:
        await engine.close()
