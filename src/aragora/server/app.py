"""The FastAPI application of the control plane.

Requests pass, outermost first: the admin token check (:mod:`.middleware.tenancy`),
the body size limit (:mod:`.middleware.body_limit`), then the handlers; every error on
the way is answered as problem+json (:mod:`.problems`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from aragora import __version__
from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.server.handlers import control_plane, probes
from aragora.server.longpoll import ClientGone, handle_client_gone
from aragora.server.middleware.body_limit import BodyLimitMiddleware, request_body_limit_bytes
from aragora.server.middleware.tenancy import AdminTokenMiddleware
from aragora.server.openapi import finish_openapi
from aragora.server.problems import install_problem_handlers
from aragora.server.state import ServerState


class _ControlPlaneApp(FastAPI):
    """FastAPI with the OpenAPI touches of :func:`aragora.server.openapi.finish_openapi`."""

    bearer_auth = False

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            finish_openapi(super().openapi(), bearer_auth=self.bearer_auth)
        assert self.openapi_schema is not None
        return self.openapi_schema


def create_app(
    config: ControlPlaneConfig,
    *,
    admin_token: str | None = None,
    coordinator: ControlPlaneCoordinator | None = None,
) -> FastAPI:
    """Build the app serving the control plane API.

    Without ``coordinator`` the app's lifespan creates one from ``config``, starts it,
    and closes it on shutdown. A coordinator passed in (as tests do, since an ASGI
    test transport runs no lifespan) is used as is and left to its owner to close.
    With ``admin_token`` set, every route but the probes and the API description needs
    ``Authorization: Bearer <admin_token>``.
    """
    if admin_token is not None and not admin_token:
        raise ValueError("admin_token must be non-empty; pass None to serve without a token")
    state = ServerState(coordinator)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: ControlPlaneCoordinator | None = None
        if state.coordinator is None:
            owned = ControlPlaneCoordinator(config)
            try:
                await owned.start()
            except BaseException:
                await owned.close()
                raise
            state.coordinator = owned
        try:
            yield
        finally:
            state.begin_shutdown()
            if owned is not None:
                await owned.close()

    app = _ControlPlaneApp(
        title="Aragora control plane",
        version=__version__,
        description="Register agents, submit prioritised tasks, claim and finish them.",
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.bearer_auth = admin_token is not None
    app.state.aragora = state
    install_problem_handlers(app)
    app.add_exception_handler(ClientGone, handle_client_gone)
    app.include_router(control_plane.router)
    app.include_router(probes.router)
    # Added last = outermost: the token is checked before any byte of the body is read.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=request_body_limit_bytes(config))
    app.add_middleware(AdminTokenMiddleware, admin_token=admin_token)
    return app
