"""The FastAPI application of the control plane.

The dashboard's static files (``/`` and ``/ui/...``, :mod:`.dashboard`) are answered
before anything else, without a token. Other requests pass, outermost first:
correlation id and audit trail (:mod:`.audit`), the
token check that finds the principal and its workspace (:mod:`.middleware.tenancy`),
the body size limit (:mod:`.middleware.body_limit`), then the routers, which authorize
every route from one table (:mod:`.authz`) before the handlers run. Every error on the
way is answered as problem+json (:mod:`.problems`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from aragora import __version__
from aragora.alerts.models import AlertThresholds
from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.crypto import PayloadCipher
from aragora.policy.engine import PolicyEngine
from aragora.server.audit import AuditMiddleware
from aragora.server.dashboard import DashboardMiddleware
from aragora.server.handlers import (
    accounting,
    admin,
    batch,
    control_plane,
    dashboard,
    metrics,
    policies,
    probes,
)
from aragora.server.longpoll import ClientGone, handle_client_gone
from aragora.server.middleware.body_limit import BodyLimitMiddleware, request_body_limit_bytes
from aragora.server.middleware.tenancy import TenancyMiddleware
from aragora.server.observability import AlertSettings
from aragora.server.openapi import finish_openapi
from aragora.server.problems import install_problem_handlers
from aragora.server.services import ServiceSettings, build_services, close_services
from aragora.server.state import ServerState
from aragora.tenancy.service import TenancyService


class _ControlPlaneApp(FastAPI):
    """FastAPI with the OpenAPI touches of :func:`aragora.server.openapi.finish_openapi`."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            finish_openapi(super().openapi())
        assert self.openapi_schema is not None
        return self.openapi_schema


def create_app(
    config: ControlPlaneConfig,
    *,
    admin_token: str | None = None,
    coordinator: ControlPlaneCoordinator | None = None,
    secret_key: bytes | None = None,
    cipher: PayloadCipher | None = None,
    tenancy: TenancyService | None = None,
    policy: PolicyEngine | None = None,
    alert_webhook_url: str | None = None,
    alert_webhook_secret: str | None = None,
    alert_thresholds: AlertThresholds | None = None,
) -> FastAPI:
    """Build the app serving the control plane API.

    Every route but the probes and the API description needs an API token
    (``Authorization: Bearer <token>``) and acts in the token's workspace.

    Without ``coordinator`` the app's lifespan creates one from ``config`` (encrypting
    task data with ``cipher``), starts it, and closes it on shutdown. A coordinator
    passed in is used as is and left to its owner to close. The lifespan then builds
    the services (:func:`aragora.server.services.build_services`): token checks keyed
    with ``secret_key`` (required unless ``tenancy`` is given), the policy engine
    (``policy``, default one on the coordinator's store), and the bootstrap admin token
    of workspace ``default``: ``admin_token`` if given (``ARAGORA_ADMIN_TOKEN``), else
    one issued when ``default`` has no admin, kept in ``ServerState.issued_admin_token``.
    It also starts the server's observability (:mod:`aragora.server.observability`):
    metrics, this instance's presence among the deployment's instances, and the alert
    engine, which posts signed alerts to ``alert_webhook_url`` with
    ``alert_webhook_secret`` when both are given (``ARAGORA_ALERT_WEBHOOK_URL`` /
    ``ARAGORA_ALERT_WEBHOOK_SECRET``) and fires by ``alert_thresholds``. Shutdown
    closes them in reverse order, then the coordinator it created.
    An ASGI test transport runs no lifespan: call ``build_services(app)`` (and
    ``close_services(app)``) instead.
    """
    if admin_token is not None and not admin_token:
        raise ValueError("admin_token must be non-empty; pass None to issue one at startup")
    settings = ServiceSettings(
        secret_key=secret_key,
        admin_token=admin_token,
        tenancy=tenancy,
        policy=policy,
        alerts=AlertSettings(alert_webhook_url, alert_webhook_secret, alert_thresholds),
    )
    state = ServerState(coordinator, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: ControlPlaneCoordinator | None = None
        if state.coordinator is None:
            owned = ControlPlaneCoordinator(config, cipher=cipher)
            try:
                await owned.start()
            except BaseException:
                await owned.close()
                raise
            state.coordinator = owned
        try:
            if state.services is None:
                await build_services(state, run_background=True)
            yield
        finally:
            state.begin_shutdown()
            try:
                await close_services(state)
            finally:
                if owned is not None:
                    await owned.close()

    app = _ControlPlaneApp(
        title="Aragora control plane",
        version=__version__,
        description="Register agents, submit prioritised tasks, claim and finish them; "
        "manage workspaces, tokens, access rules, flags, budgets and the audit trail.",
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.aragora = state
    install_problem_handlers(app)
    app.add_exception_handler(ClientGone, handle_client_gone)
    app.include_router(control_plane.router)
    app.include_router(batch.router)
    app.include_router(admin.router)
    app.include_router(policies.router)
    app.include_router(accounting.router)
    app.include_router(probes.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    # Added last = outermost: every request gets a correlation id and, where due, an
    # audit event; the token is checked before any byte of the body is read.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=request_body_limit_bytes(config))
    app.add_middleware(TenancyMiddleware, state=state)
    app.add_middleware(AuditMiddleware, state=state)
    # Outermost of all: the dashboard's static files, served without a token.
    app.add_middleware(DashboardMiddleware)
    return app
