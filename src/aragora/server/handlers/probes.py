"""Liveness and readiness probes for orchestrators (open without a token).

``/livez`` answers 200 while the process serves requests at all. ``/readyz`` answers
200 only while the store answers and the server is not shutting down, so a load
balancer stops sending traffic to an instance that is draining.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from aragora.control_plane.errors import ControlPlaneError
from aragora.control_plane.health import HealthCheck, HealthReport, HealthStatus
from aragora.server.handlers.responses import HealthJSONResponse, health_response
from aragora.server.schemas import HealthOut
from aragora.server.state import ServerState, get_server_state

router = APIRouter(tags=["probes"])


@router.get(
    "/livez", response_model=HealthOut, response_class=HealthJSONResponse, operation_id="livez"
)
async def livez() -> Response:
    """The process is alive."""
    check = HealthCheck("process", HealthStatus.PASS)
    return health_response(HealthReport(HealthStatus.PASS, (check,)))


@router.get(
    "/readyz",
    response_model=HealthOut,
    response_class=HealthJSONResponse,
    operation_id="readyz",
    responses={503: {"model": HealthOut, "description": "Not ready"}},
)
async def readyz(state: Annotated[ServerState, Depends(get_server_state)]) -> Response:
    """The store answers and the server is not shutting down."""
    coordinator = state.coordinator
    if state.shutting_down or coordinator is None:
        check = HealthCheck("store", HealthStatus.FAIL, output="shutting down or not started")
    else:
        try:
            check = await coordinator.health.readiness()
        except ControlPlaneError:
            check = HealthCheck("store", HealthStatus.FAIL)
        if check.status is HealthStatus.FAIL:
            # Open without a token: say that the store fails, not where it lives.
            check = HealthCheck(
                "store", HealthStatus.FAIL, output="store unavailable or shutting down"
            )
    return health_response(HealthReport(check.status, (check,)))
