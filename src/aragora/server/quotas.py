"""Workspace quotas on the server: limits pushed to the store, and submit rate limits.

The tenancy store holds each workspace's plan and quota overrides; the task store
enforces the limits (agents, pending and running tasks, payload size, budget) inside
the transitions they guard. :func:`push_limits` copies a workspace's effective quotas
into the task store's :class:`WorkspaceLimits`, keeping the budget, which lives only
there. The server pushes them when a workspace is created or changed through the API,
and for every workspace at startup, so limits hold after restarts and after changes
made while no server ran.

Submits are also rate limited per minute (``max_submits_per_minute``), once for the
workspace and once for the calling token, by :func:`check_submit_rate`. The token's
limit is the workspace's: a single token may use the whole allowance, and the key per
token is already in place for a separate per-token quota later.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aragora.cache import InvalidationBus, TTLCache
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import QuotaExceededError
from aragora.control_plane.models import BudgetPeriod, WorkspaceLimits
from aragora.policy.ratelimit import MAX_LIMIT, RateLimiter
from aragora.server.errors import RateLimitedError
from aragora.tenancy.errors import WorkspaceNotFoundError
from aragora.tenancy.models import Principal, Workspace, WorkspaceQuotas
from aragora.tenancy.service import WORKSPACE_NAMESPACE
from aragora.tenancy.store import TenancyStore

SUBMIT_QUOTA: Final = "max_submits_per_minute"
SUBMIT_WINDOW_S: Final = 60.0
DEFAULT_QUOTA_REFRESH_S: Final = 1.0


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""Leave the stored budget as it is (see :func:`push_limits`)."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A workspace budget: at most ``limit`` cost per ``period``; an alert at ``soft_ratio``."""

    limit: float
    period: BudgetPeriod = BudgetPeriod.MONTHLY
    soft_ratio: float = 0.8


def budget_of(limits: WorkspaceLimits) -> Budget | None:
    """The budget part of stored limits (``None``: no budget)."""
    if limits.budget is None:
        return None
    return Budget(limits.budget, limits.budget_period, limits.budget_soft_ratio)


def limits_for(
    quotas: WorkspaceQuotas, current: WorkspaceLimits, budget: Budget | _Keep | None = KEEP
) -> WorkspaceLimits:
    """``current`` with the quotas' limits and, unless :data:`KEEP`, the new budget."""
    limits = dataclasses.replace(
        current,
        max_agents=quotas.max_agents,
        max_pending_tasks=quotas.max_pending_tasks,
        max_running_tasks=quotas.max_running_tasks,
        max_payload_bytes=quotas.max_payload_bytes,
    )
    if budget is KEEP:
        return limits
    if budget is None:
        return dataclasses.replace(limits, budget=None)
    return dataclasses.replace(
        limits,
        budget=budget.limit,
        budget_period=budget.period,
        budget_soft_ratio=budget.soft_ratio,
    )


async def push_limits(
    cp: ControlPlaneCoordinator, workspace: Workspace, budget: Budget | _Keep | None = KEEP
) -> WorkspaceLimits:
    """Make the store enforce ``workspace``'s quotas (and ``budget``, unless :data:`KEEP`).

    Reads the stored limits first to keep the budget: an administrative path, where a
    concurrent budget change through another instance may be lost (the last write wins).
    """
    current = await cp.get_workspace_limits(workspace.name)
    limits = limits_for(workspace.quotas, current, budget)
    if limits != current:
        await cp.set_workspace_limits(workspace.name, limits)
    return limits


async def push_all_limits(cp: ControlPlaneCoordinator, store: TenancyStore) -> None:
    """:func:`push_limits` for every workspace (``default`` included once it exists)."""
    for workspace in await store.list_workspaces():
        await push_limits(cp, workspace)


class QuotaCache:
    """Effective quotas per workspace for the submit path, kept for at most
    ``refresh_s`` seconds (0: read the store every time).

    With a ``bus``, a workspace write published on it (namespace ``workspace``; see
    :class:`~aragora.tenancy.service.InvalidatingTenancyStore`) drops the entry in every
    instance at once; without one, a change made through another instance applies within
    ``refresh_s``. :meth:`forget` drops an entry in this instance only.
    """

    def __init__(
        self,
        store: TenancyStore,
        *,
        refresh_s: float = DEFAULT_QUOTA_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
        bus: InvalidationBus | None = None,
    ) -> None:
        self._store = store
        self.refresh_s = refresh_s
        self._cached: TTLCache[WorkspaceQuotas] = TTLCache(refresh_s, monotonic=monotonic)
        if bus is not None:
            bus.subscribe(WORKSPACE_NAMESPACE, self._drop)

    async def get(self, workspace_id: str) -> WorkspaceQuotas:
        """The workspace's quotas (the plan defaults for a workspace not in the store)."""
        cached = self._cached.get(workspace_id)
        if cached is not None:
            return cached
        generation = self._cached.generation
        try:
            quotas = (await self._store.get_workspace(workspace_id)).quotas
        except WorkspaceNotFoundError:
            quotas = WorkspaceQuotas()
        self._cached.put(workspace_id, quotas, generation=generation)
        return quotas

    def forget(self, workspace_id: str) -> None:
        """Drop the cached quotas after a change made through this instance."""
        self._cached.invalidate(workspace_id)

    def _drop(self, workspace_id: str | None) -> None:
        if workspace_id is None:
            self._cached.clear()
        else:
            self._cached.invalidate(workspace_id)


async def check_submit_rate(
    limiter: RateLimiter, quotas: WorkspaceQuotas, principal: Principal
) -> None:
    """Count one submit against the token's and the workspace's per-minute limits.

    :class:`RateLimitedError` when either is used up (nothing else changes); a limit of
    0 refuses every submit with :class:`QuotaExceededError` (403: waiting never helps).
    ``None``, or a limit beyond what the rate limiter counts, is unlimited.
    """
    limit = quotas.max_submits_per_minute
    if limit is None or limit > MAX_LIMIT:
        return
    if limit == 0:
        raise QuotaExceededError(SUBMIT_QUOTA, 0, 0)
    workspace_id = principal.workspace_id
    keys = (("token", f"submit:token:{principal.token_id}"), ("workspace", "submit"))
    for scope, key in keys:
        decision = await limiter.hit(workspace_id, key, limit, SUBMIT_WINDOW_S)
        if not decision.allowed:
            raise RateLimitedError(
                SUBMIT_QUOTA,
                limit,
                decision.retry_after_s,
                "token" if scope == "token" else "workspace",
            )
