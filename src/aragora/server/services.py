"""The services a request needs beyond the coordinator: tenancy, policy, rate limits,
and the server's observability (metrics, instance presence, alerts, health).

:func:`build_services` makes them around the app's coordinator and runs the startup
steps: the bootstrap admin token of workspace ``default``, the push of every
workspace's quotas to the store, and the start of
:class:`~aragora.server.observability.ServerObservability`. The app's lifespan calls it
with ``run_background=True`` and :func:`close_services` on shutdown; a test that drives
the app through an ASGI transport (which runs no lifespan) calls it itself::

    app = create_app(config, coordinator=cp, secret_key=key, admin_token=token)
    await build_services(app)
    ...
    await close_services(app)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from aragora.cache import InvalidationBus, create_invalidation_bus
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import ConfigError, StoreUnavailableError
from aragora.policy.engine import PolicyEngine
from aragora.policy.ratelimit import RateLimiter, create_rate_limiter
from aragora.server.observability import AlertSettings, ServerObservability
from aragora.server.quotas import QuotaCache, push_all_limits
from aragora.server.state import ServerState, server_state
from aragora.tenancy.service import TenancyService
from aragora.tenancy.store import create_tenancy_store


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What :func:`aragora.server.app.create_app` was given to build the services with.

    ``secret_key`` keys the token hashes (required unless ``tenancy`` is given);
    ``admin_token`` is the bootstrap admin token (``ARAGORA_ADMIN_TOKEN``);
    ``alerts`` says where alerts go (webhook) and when they fire.
    """

    secret_key: bytes | None = None
    admin_token: str | None = None
    tenancy: TenancyService | None = None
    policy: PolicyEngine | None = None
    alerts: AlertSettings | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """Who is calling (``tenancy``), what they may do (``policy``), how often
    (``rate_limiter``) and the workspace quotas the submit path reads (``quotas``).

    ``invalidation`` carries cache invalidations between the instances of a deployment:
    tenancy, policy and quotas cache their hot reads for ``cache_ttl_s`` and drop them
    when any instance publishes a write."""

    tenancy: TenancyService
    policy: PolicyEngine
    rate_limiter: RateLimiter
    quotas: QuotaCache
    invalidation: InvalidationBus


async def build_services(
    app: Starlette | ServerState,
    coordinator: ControlPlaneCoordinator | None = None,
    *,
    secret_key: bytes | None = None,
    admin_token: str | None = None,
    run_background: bool = False,
) -> Services:
    """Build the services around ``coordinator`` (default: the app's) and attach them.

    Arguments left out come from what ``create_app`` was given. Runs
    :meth:`TenancyService.bootstrap_admin` (an admin token it had to issue is kept as
    ``ServerState.issued_admin_token``, for the runner to show once), pushes every
    workspace's quotas to the store and starts the server's observability
    (``ServerState.observability``): with ``run_background`` (the lifespan) this
    instance beats and alerts are evaluated on their schedule; without, the instance
    registers once and nothing runs in the background. :func:`close_services` stops
    it. ``ConfigError`` without a secret key.
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
    if state.services is not None:  # built again: the earlier subscription goes
        await state.services.invalidation.close()
    bus = create_invalidation_bus(cp.store)
    await bus.start()
    try:
        ttl_s = cp.config.cache_ttl_s
        # The store clock as tests move it (offset 0 in production).
        store = cp.store
        tenancy.enable_cache(bus, ttl_s, clock=lambda: time.time() + store.clock_offset_s)
        policy.enable_cache(bus, ttl_s)
        quotas = QuotaCache(tenancy.store, refresh_s=ttl_s, bus=bus)
        state.issued_admin_token = await tenancy.bootstrap_admin(token)
        await push_all_limits(cp, tenancy.store)
    except BaseException:
        await bus.close()
        raise
    services = Services(tenancy, policy, limiter, quotas, bus)
    if state.observability is None:
        state.observability = await ServerObservability.start(
            cp, settings.alerts, run_background=run_background
        )
        long_polls = state.long_polls
        state.observability.metrics.http_long_polls.set_function(lambda: long_polls.active)
    state.services = services
    return services


async def close_services(app: Starlette | ServerState) -> None:
    """Stop what :func:`build_services` started (alerts, instance presence, the cache
    invalidation subscription), in reverse order. Idempotent; metrics and health stay
    readable for requests still in flight."""
    state = app if isinstance(app, ServerState) else server_state(app)
    if state.observability is not None:
        await state.observability.close()
    if state.services is not None:
        await state.services.invalidation.close()


def require_services(state: ServerState) -> Services:
    """The state's services; the store counts as unavailable until they are built."""
    services = state.services
    if services is None:
        raise StoreUnavailableError("the control plane is not running")
    return services


async def get_services(connection: HTTPConnection) -> Services:
    """Dependency: the services of the app serving this request (503 before startup)."""
    return require_services(server_state(connection.app))


async def get_observability(connection: HTTPConnection) -> ServerObservability:
    """Dependency: the server's metrics, instances, alerts and health (503 before startup)."""
    observability = server_state(connection.app).observability
    if observability is None:
        raise StoreUnavailableError("the control plane is not running")
    return observability
