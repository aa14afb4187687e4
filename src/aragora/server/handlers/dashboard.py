"""What the dashboard reads beyond the control plane API: who is calling, and the live
feed of the caller's workspace.

``GET /api/control-plane/whoami`` names the caller's workspace, role and the actions
the role grants, so a page can hide what the caller may not do (the API still refuses
it). ``GET /api/control-plane/events`` with ``Accept: text/event-stream`` streams the
workspace's snapshots as server-sent events (:mod:`aragora.server.dashboard.feed`):
every section once on connect, then each section again whenever it changes, and a
comment line after each :data:`KEEPALIVE_S` without an event so that proxies keep the
connection. The stream
ends when the client leaves, when the server begins to shut down, when its token stops
authenticating (revoked or expired; checked every :data:`TOKEN_RECHECK_S`), or after
:data:`MAX_STREAM_S` (clients reconnect; the ``retry`` field asks for 2 s, and a client
whose token was revoked then gets 401). Without that ``Accept`` it answers one snapshot
as JSON.

The stream needs ``task.read``; its ``agents`` section is sent only to principals that
hold ``agent.read`` and its ``overview`` only to those that hold ``health.read`` (the
grant of the role, narrowed by the workspace's rules). Browsers' ``EventSource`` cannot
send an ``Authorization`` header, so the page reads the stream with ``fetch()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response, StreamingResponse

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import ControlPlaneError
from aragora.server.authz import API_PREFIX, authorize_route
from aragora.server.dashboard.feed import AGENTS, OVERVIEW, TASKS, EventHub
from aragora.server.handlers.responses import problem_responses
from aragora.server.middleware.tenancy import current_principal
from aragora.server.observability import ServerObservability
from aragora.server.rendering import SafeJSONResponse
from aragora.server.services import Services, get_observability, get_services
from aragora.server.state import ServerState, get_coordinator, get_server_state
from aragora.tenancy.models import ROLE_ACTIONS, Action, Principal

EVENT_STREAM: Final = "text/event-stream"
KEEPALIVE_S: Final = 15.0
MAX_STREAM_S: Final = 300.0
TOKEN_RECHECK_S: Final = 2.0
"""How often an open stream checks that its token still authenticates."""
RETRY_MS: Final = 2000

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize_route)])

Coordinator = Annotated[ControlPlaneCoordinator, Depends(get_coordinator)]
Caller = Annotated[Principal, Depends(current_principal)]
Svc = Annotated[Services, Depends(get_services)]
Observability = Annotated[ServerObservability, Depends(get_observability)]
State = Annotated[ServerState, Depends(get_server_state)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhoAmIOut(_Out):
    """The caller as the API sees it."""

    workspace: str
    role: str
    token_id: str
    actions: list[str]


class SnapshotOut(_Out):
    """One snapshot of the workspace; a section the caller may not read is absent."""

    overview: dict[str, Any] | None = None
    agents: dict[str, Any] | None = None
    tasks: dict[str, Any] | None = None


@router.get(
    "/whoami",
    response_model=WhoAmIOut,
    tags=["dashboard"],
    operation_id="whoAmI",
    responses=problem_responses(),
)
async def whoami(caller: Caller) -> Response:
    """The caller's workspace and role, and the actions the role grants (a workspace's
    rules may narrow them further)."""
    actions = sorted(action.value for action in ROLE_ACTIONS[caller.role])
    return SafeJSONResponse(
        {
            "workspace": caller.workspace_id,
            "role": caller.role.value,
            "token_id": caller.token_id,
            "actions": actions,
        }
    )


async def event_hub(request: Request, cp: Coordinator, observability: Observability) -> EventHub:
    """Dependency: the app's event hub, made on first use around its coordinator."""
    hub = getattr(request.app.state, "dashboard_events", None)
    if not isinstance(hub, EventHub):
        hub = EventHub(cp, observability.health)
        request.app.state.dashboard_events = hub
    return hub


Hub = Annotated[EventHub, Depends(event_hub)]


async def _readable_sections(services: Services, caller: Principal) -> frozenset[str]:
    sections = {TASKS}
    for section, action in ((AGENTS, Action.AGENT_READ), (OVERVIEW, Action.HEALTH_READ)):
        if (await services.policy.authorize(caller, action)).allowed:
            sections.add(section)
    return frozenset(sections)


@router.get(
    "/events",
    response_model=SnapshotOut,
    tags=["dashboard"],
    operation_id="workspaceEvents",
    responses={
        200: {
            "description": "One snapshot as JSON, or with `Accept: text/event-stream` a "
            "stream of `overview`, `agents` and `tasks` events",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        },
        **problem_responses(),
    },
)
async def events(
    request: Request, hub: Hub, caller: Caller, services: Svc, state: State
) -> Response:
    """The live feed of the caller's workspace (see the module docstring)."""
    sections = await _readable_sections(services, caller)
    if EVENT_STREAM not in request.headers.get("accept", ""):
        snapshot = await hub.snapshot(caller.workspace_id)
        return SafeJSONResponse({k: v for k, v in snapshot.items() if k in sections})
    presented = request.headers.get("authorization", "").partition(" ")[2].strip()

    async def token_still_valid() -> bool:
        try:
            principal = await services.tenancy.authenticate(presented)
        except ControlPlaneError:  # revoked, expired, or the store cannot tell
            return False
        return principal.token_id == caller.token_id

    return StreamingResponse(
        _stream(hub, caller.workspace_id, sections, state, token_still_valid),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    hub: EventHub,
    workspace_id: str,
    sections: frozenset[str],
    state: ServerState,
    token_still_valid: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + MAX_STREAM_S
    recheck_at = loop.time() + TOKEN_RECHECK_S
    keepalive_at = loop.time() + KEEPALIVE_S
    yield f"retry: {RETRY_MS}\n\n".encode()
    async with hub.subscribe(workspace_id, sections) as subscription:
        while True:
            now = loop.time()
            if now >= ends_at:
                return
            if now >= recheck_at:
                if not await token_still_valid():
                    return
                recheck_at = loop.time() + TOKEN_RECHECK_S
            if now >= keepalive_at:
                yield b": keep-alive\n\n"
                keepalive_at = now + KEEPALIVE_S
            timeout_s = max(0.0, min(ends_at, recheck_at, keepalive_at) - loop.time())
            waiting = asyncio.ensure_future(subscription.next_events(timeout_s))
            shutdown = asyncio.ensure_future(state.shutdown_event.wait())
            try:
                await asyncio.wait((waiting, shutdown), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                shutdown.cancel()
            if state.shutting_down or waiting.cancelled():
                return
            events = waiting.result()
            for event in events:
                yield event.encode()
            if events:
                keepalive_at = loop.time() + KEEPALIVE_S
