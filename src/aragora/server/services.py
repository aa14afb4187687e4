"""The services a request needs beyond the coordinator: tenancy, policy, rate limits.

:func:`build_services` makes them around the app's coordinator and runs the startup
steps: the bootstrap admin token of workspace ``default`` and the push of every
workspace's quotas to the store. The app's lifespan calls it; a test that drives the
app through an ASGI transport (which runs no lifespan) calls it itself::

    app = create_app(config, coordinator=cp, secret_key=key, admin_token=token)
    await build_services(app)
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import ConfigError, StoreUnavailableError
from aragora.policy.engine import PolicyEngine
from aragora.policy.ratelimit import RateLimiter, create_rate_limiter
from aragora.server.quotas import QuotaCache, push_all_limits
from aragora.server.state import ServerState, server_state
from aragora.tenancy.service import TenancyService
from aragora.tenancy.store import create_tenancy_store


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What :func:`aragora.server.app.create_app` was given to build the services with.

    ``secret_key`` keys the token hashes (required unless ``tenancy`` is given);
    ``admin_token`` is the bootstrap admin token (``ARAGORA_ADMIN_TOKEN``).
    """

    secret_key: bytes | None = None
    admin_token: str | None = None
    tenancy: TenancyService | None = None
    policy: PolicyEngine | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """Who is calling (``tenancy``), what they may do (``policy``), how often
    (``rate_limiter``) and the workspace quotas the submit path reads (``quotas``)."""

    tenancy: TenancyService
    policy: PolicyEngine
    rate_limiter: RateLimiter
    quotas: QuotaCache


async def build_services(
    app: Starlette | ServerState,
    coordinator: ControlPlaneCoordinator | None = None,
    *,
    secret_key: bytes | None = None,
    admin_token: str | None = None,
) -> Services:
    """Build the services around ``coordinator`` (default: the app's) and attach them.

    Arguments left out come from what ``create_app`` was given. Runs
    :meth:`TenancyService.bootstrap_admin` (an admin token it had to issue is kept as
    ``ServerState.issued_admin_token``, for the runner to show once) and pushes every
    workspace's quotas to the store. ``ConfigError`` without a secret key.
    """
    state = app if isinstance(app, ServerState) else server_state(app)
    if coordinator is not None:
        state.coordinator = coordinator
    cp = state.require_coordinator()
    settings = state.settings or ServiceSettings()
    key = secret_key if secret_key is not None else settings.secret_key
    token = admin_token if admin_token is not None else settings.admin_token
    tenancy = settings.tenancy
    if tenancy is None:
        if key is None:
            raise ConfigError(
                "the server needs a secret key to hash API tokens: set ARAGORA_SECRET_KEY "
                "or give it a data directory"
            )
        tenancy = TenancyService(create_tenancy_store(cp.store), key)
    policy = settings.policy or PolicyEngine.for_store(cp.store)
    limiter = policy.rate_limiter or create_rate_limiter(cp.store)
    state.issued_admin_token = await tenancy.bootstrap_admin(token)
    await push_all_limits(cp, tenancy.store)
    services = Services(tenancy, policy, limiter, QuotaCache(tenancy.store))
    state.services = services
    return services


def require_services(state: ServerState) -> Services:
    """The state's services; the store counts as unavailable until they are built."""
    services = state.services
    if services is None:
        raise StoreUnavailableError("the control plane is not running")
    return services


def get_services(connection: HTTPConnection) -> Services:
    """Dependency: the services of the app serving this request (503 before startup)."""
    return require_services(server_state(connection.app))
