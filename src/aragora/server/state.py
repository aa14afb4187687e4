"""What one app instance holds between requests: its coordinator, its services and its
shutdown signal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import StoreUnavailableError

if TYPE_CHECKING:
    from aragora.server.observability import ServerObservability
    from aragora.server.services import Services, ServiceSettings


class LongPollTracker:
    """Counts requests that are waiting in a long-poll, and lets callers await a count.

    The count is what a graceful shutdown releases; tests await it to know that a
    request is waiting before they change what it waits for.
    """

    def __init__(self) -> None:
        self._active = 0
        self._changed = asyncio.Condition()

    @property
    def active(self) -> int:
        return self._active

    @asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        async with self._changed:
            self._active += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            self._active -= 1

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` long-polls are waiting."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._active >= count)


class ServerState:
    """The coordinator serving requests, the services around it and the event that ends
    long-polls on shutdown.

    ``settings`` is what the services are built from and ``services`` what was built
    (see :mod:`aragora.server.services`), ``observability`` its metrics, instance
    presence, alerts and health (:mod:`aragora.server.observability`; built with the
    services). ``issued_admin_token`` is the secret of an
    admin token the startup had to issue, for the runner to show once; ``None`` when
    none was issued.
    """

    def __init__(
        self,
        coordinator: ControlPlaneCoordinator | None = None,
        settings: ServiceSettings | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.settings = settings
        self.services: Services | None = None
        self.observability: ServerObservability | None = None
        self.issued_admin_token: str | None = None
        self.shutdown_event = asyncio.Event()
        self.long_polls = LongPollTracker()

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_event.is_set()

    def begin_shutdown(self) -> None:
        """Release every long-poll with its current answer and fail readiness. Idempotent."""
        self.shutdown_event.set()

    def require_coordinator(self) -> ControlPlaneCoordinator:
        if self.coordinator is None:
            raise StoreUnavailableError("the control plane is not running")
        return self.coordinator


def server_state(app: Starlette) -> ServerState:
    """The state that :func:`aragora.server.app.create_app` attached to ``app``."""
    state = getattr(app.state, "aragora", None)
    if not isinstance(state, ServerState):
        raise RuntimeError("not an app built by aragora.server.create_app")
    return state


def begin_shutdown(app: Starlette) -> None:
    """Tell the app that the server is stopping (called before in-flight requests drain)."""
    server_state(app).begin_shutdown()


async def get_server_state(connection: HTTPConnection) -> ServerState:
    """Dependency: the state of the app serving this request."""
    return server_state(connection.app)


async def get_coordinator(connection: HTTPConnection) -> ControlPlaneCoordinator:
    """Dependency: the coordinator; 503 while the app is not started."""
    return server_state(connection.app).require_coordinator()
