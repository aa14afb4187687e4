"""Where alert notifications go: the log (always), Python hooks, and webhooks.

A sink's ``send`` never blocks its caller (the engine calls it while evaluating):
anything slow happens in the sink's own background work, started by ``start`` and
drained by ``close``. The engine starts and closes the sinks it is given.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from aragora.alerts.models import AlertEvent, AlertSeverity, AlertStatus

AlertHook = Callable[[AlertEvent], Awaitable[None] | None]
"""A Python callable notified of every alert event; a coroutine function's runs are
awaited in the background (and on close)."""


@runtime_checkable
class AlertSink(Protocol):
    """Receives alert events; ``send`` must return at once."""

    def send(self, event: AlertEvent) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


_LEVELS = {
    AlertSeverity.INFO: logging.INFO,
    AlertSeverity.WARNING: logging.WARNING,
    AlertSeverity.CRITICAL: logging.ERROR,
}


class LogSink:
    """One structured log line per event on the ``aragora.alerts`` logger: firing at
    the alert's severity, resolved at INFO. With :func:`aragora.observability.logging.
    configure_logging` the fields come out as JSON keys."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("aragora.alerts")

    def send(self, event: AlertEvent) -> None:
        level = _LEVELS[event.severity] if event.status is AlertStatus.FIRING else logging.INFO
        self._logger.log(
            level,
            "alert %s %s: %s",
            event.status.value,
            event.kind,
            event.summary,
            extra={
                "alert_id": event.key,
                "alert_kind": event.kind,
                "alert_status": event.status.value,
                "severity": event.severity.value,
                "workspace_id": event.workspace_id,
                "details": event.details,
                "instance_id": event.instance_id,
            },
        )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class HookSink:
    """Calls a Python hook with every event; a failing hook is logged and ignored."""

    def __init__(self, hook: AlertHook) -> None:
        self._hook = hook
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, event: AlertEvent) -> None:
        try:
            outcome = self._hook(event)
        except Exception:
            logging.getLogger(__name__).exception("alert hook %r failed", self._hook)
            return
        if inspect.isawaitable(outcome):
            task = asyncio.create_task(self._run(outcome))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _run(self, outcome: Awaitable[None]) -> None:
        try:
            await outcome
        except Exception:
            logging.getLogger(__name__).exception("alert hook %r failed", self._hook)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        """Wait for hook coroutines still running."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
