"""``GET /metrics``: the Prometheus text exposition of this server's metrics.

Counters and histograms are this process's own (tasks submitted and finished through
it, its HTTP requests, its store operations); the gauges (queues, agents, breakers,
instances) are read from the shared store at scrape time, so every instance reports
the same values for them. Only admins of workspace ``default`` (the deployment's
operators) may scrape: labels name every workspace.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from aragora.server.authz import authorize_route
from aragora.server.handlers.responses import problem_responses
from aragora.server.observability import ServerObservability
from aragora.server.services import get_observability

router = APIRouter(dependencies=[Depends(authorize_route)])


@router.get(
    "/metrics",
    response_class=Response,
    tags=["metrics"],
    operation_id="metrics",
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        **problem_responses(),
    },
)
async def metrics(
    observability: Annotated[ServerObservability, Depends(get_observability)],
) -> Response:
    """Metrics of this server and gauges of the store, for Prometheus."""
    body, content_type = await observability.metrics.scrape()
    return Response(body, media_type=content_type)
