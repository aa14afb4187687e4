"""PolicyEngine: may this principal do this, here, now? (ADR-009)

``authorize`` decides in two steps:

1. the built-in grant of the principal's role (``aragora.tenancy.models.role_allows``);
   a role that lacks the action is denied and no rule can change that;
2. the workspace's own rules, Cedar text stored by ``PolicyStore`` and evaluated
   together with a base ``permit(principal, action, resource);`` under Cedar's
   deny-overrides-allow semantics. Rules are therefore ``forbid`` statements that
   narrow the role grant; see ``aragora.policy.cedar`` for what they can refer to.

One exception: an admin may always manage policies, so a workspace cannot lock itself
out of repairing its rules.

Caching, and how fast a change takes effect. Decisions are kept in a bounded LRU map
keyed by (workspace, rules version, role, action) plus only what the workspace's rules
actually read: the context attributes they mention (``hour_utc`` included) and the
token id if a rule names a token (see ``CompiledRules.cache_key``).
Each instance remembers, per workspace, the rules version it compiled and re-reads
the stored version at most every ``rules_refresh_s`` (default 1 s): one cheap read,
followed by a reload and recompile only when the version moved. A rule written on any
instance therefore governs every instance within about ``rules_refresh_s``, and at once
on the instance that wrote it through this engine. Old cache entries are never
consulted again once the version moves; the LRU bound drops them.

With ``PolicyEngine.enable_cache`` (the server turns it on) every rule or flag write
through the engine's ``rules_store`` publishes an invalidation once it commits
(namespaces ``rules`` and ``flags``, key = workspace): every instance then re-reads the
workspace's rules at its next decision, and the version check runs at most every
``cache_ttl_s`` as the safety net for a missed message.

The engine also carries the workspace's rate limiter and feature-flag provider when
built with ``PolicyEngine.for_store``; budgets are kept by the task store.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aragora.policy.cedar import CompiledRules, compile_rules, evaluate, freeze_attributes
from aragora.policy.models import Decision, Rule
from aragora.policy.provider import AragoraFlagProvider
from aragora.policy.ratelimit import RateLimiter, create_rate_limiter
from aragora.policy.store import Documents, Kind, PolicyStore, create_policy_store
from aragora.tenancy.models import Action, Principal, Role, role_allows

if TYPE_CHECKING:
    from aragora.cache import InvalidationBus
    from aragora.store import Store

DEFAULT_RULES_REFRESH_S = 1.0
DEFAULT_CACHE_SIZE = 10_000
_SECONDS_PER_HOUR = 3_600


@dataclass(slots=True)
class _Loaded:
    """Compiled rules of one workspace and when their version was last checked."""

    rules: CompiledRules
    checked_at_s: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Decision cache counters since the engine was built."""

    hits: int
    misses: int
    size: int


class InvalidatingPolicyStore(PolicyStore):
    """A :class:`PolicyStore` that publishes ``<kind>:<workspace>`` (``rules`` or
    ``flags``) on an invalidation bus after every write that commits."""

    def __init__(self, inner: PolicyStore, bus: InvalidationBus) -> None:
        self.inner = inner
        self.bus = bus

    async def _read(self, workspace_id: str, kind: Kind) -> tuple[int, Documents]:
        return await self.inner._read(workspace_id, kind)

    async def _put(
        self, workspace_id: str, kind: Kind, doc_id: str, doc: str, max_docs: int
    ) -> int | None:
        version = await self.inner._put(workspace_id, kind, doc_id, doc, max_docs)
        if version is not None:
            await self.bus.publish(kind, workspace_id)
        return version

    async def _delete(self, workspace_id: str, kind: Kind, doc_id: str) -> int | None:
        version = await self.inner._delete(workspace_id, kind, doc_id)
        if version is not None:
            await self.bus.publish(kind, workspace_id)
        return version

    async def _version(self, workspace_id: str, kind: Kind) -> int:
        return await self.inner._version(workspace_id, kind)


class PolicyEngine:
    """Access decisions for every workspace on one store; see the module docstring.

    ``clock`` (wall time, for ``hour_utc``) and ``monotonic`` (for the refresh interval)
    are injectable so tests move time instead of sleeping. ``cache_size=0`` turns the
    decision cache off.
    """

    def __init__(
        self,
        rules_store: PolicyStore,
        *,
        rate_limiter: RateLimiter | None = None,
        flags: AragoraFlagProvider | None = None,
        rules_refresh_s: float = DEFAULT_RULES_REFRESH_S,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rules_refresh_s < 0 or cache_size < 0:
            raise ValueError("rules_refresh_s and cache_size must not be negative")
        self.rules_store = rules_store
        self.rate_limiter = rate_limiter
        self.flags = flags
        self.rules_refresh_s = rules_refresh_s
        self.cache_size = cache_size
        self._clock = clock
        self._monotonic = monotonic
        self._loaded: dict[str, _Loaded] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._cache: OrderedDict[Hashable, Decision] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._generation = 0

    def enable_cache(self, bus: InvalidationBus, ttl_s: float) -> None:
        """Publish every write of :attr:`rules_store` on ``bus`` once it commits, drop a
        workspace's compiled rules (and mark its flags due) when any instance publishes
        one, and check the stored versions at most every ``ttl_s`` (0: at every call)."""
        if not isinstance(self.rules_store, InvalidatingPolicyStore):
            self.rules_store = InvalidatingPolicyStore(self.rules_store, bus)
        self.rules_refresh_s = ttl_s
        bus.subscribe("rules", self._drop_rules)
        if self.flags is not None:
            self.flags.refresh_s = ttl_s
            bus.subscribe("flags", self.flags.invalidate)

    def _drop_rules(self, workspace_id: str | None) -> None:
        self._generation += 1
        if workspace_id is None:
            self._loaded.clear()
        else:
            self._loaded.pop(workspace_id, None)

    @classmethod
    def for_store(
        cls,
        store: Store,
        *,
        rules_refresh_s: float = DEFAULT_RULES_REFRESH_S,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> PolicyEngine:
        """An engine with rules, rate limiter and flag provider on ``store``'s backend.

        ``clock`` defaults to the wall clock plus the store's test offset, so moving the
        store clock in a test moves ``hour_utc`` too.
        """
        policy_store = create_policy_store(store)
        return cls(
            policy_store,
            rate_limiter=create_rate_limiter(store),
            flags=AragoraFlagProvider(policy_store, monotonic=monotonic),
            rules_refresh_s=rules_refresh_s,
            cache_size=cache_size,
            clock=clock or (lambda: time.time() + store.clock_offset_s),
            monotonic=monotonic,
        )

    # -- decisions -------------------------------------------------------------------
    async def authorize(
        self, principal: Principal, action: Action, resource: Mapping[str, object] | None = None
    ) -> Decision:
        """Decide whether ``principal`` may perform ``action`` in its own workspace.

        ``resource`` holds the request attributes rules may test (``task_type``,
        ``priority``, ``capability``, ``agent_capabilities``, ``required_capabilities``,
        ``payload_bytes``); ``hour_utc`` comes from the engine's clock. Unknown
        attributes raise ``ValueError`` (a caller bug, not user input).
        """
        role, action = Role(principal.role), Action(action)
        if not role_allows(role, action):
            return Decision(False, f"role {role.value} lacks {action.value}")
        if role is Role.ADMIN and action is Action.POLICY_MANAGE:
            return Decision(True, "admins may always manage policies; rules never narrow this")
        attrs = freeze_attributes(resource)
        hour_utc = int(self._clock() // _SECONDS_PER_HOUR) % 24
        rules = await self._rules(principal.workspace_id)
        key = rules.cache_key(principal, action, attrs, hour_utc)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._hits += 1
            return cached
        self._misses += 1
        decision = evaluate(rules, principal, action, attrs, hour_utc)
        if self.cache_size:
            self._cache[key] = decision
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return decision

    @property
    def cache_stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._cache))

    async def _rules(self, workspace_id: str) -> CompiledRules:
        loaded = self._loaded.get(workspace_id)
        if loaded is not None and self._monotonic() - loaded.checked_at_s < self.rules_refresh_s:
            return loaded.rules
        lock = self._locks.setdefault(workspace_id, asyncio.Lock())
        async with lock:  # one refresh per workspace at a time; the others reuse it
            loaded = self._loaded.get(workspace_id)
            now_s = self._monotonic()
            if loaded is not None and now_s - loaded.checked_at_s < self.rules_refresh_s:
                return loaded.rules
            generation = self._generation
            if (
                loaded is None
                or await self.rules_store.rules_version(workspace_id) != loaded.rules.version
            ):
                version, rules = await self.rules_store.get_rules(workspace_id)
                loaded = _Loaded(compile_rules(version, rules), now_s)
            else:
                loaded.checked_at_s = now_s
            if generation != self._generation:
                # Invalidated while reading: use what was read, but check again next time.
                loaded.checked_at_s = -math.inf
            self._loaded[workspace_id] = loaded
            return loaded.rules

    # -- rule management ---------------------------------------------------------------
    async def list_rules(self, workspace_id: str) -> tuple[int, list[Rule]]:
        """The workspace's rules version and rules, read from the store."""
        return await self.rules_store.get_rules(workspace_id)

    async def put_rule(
        self, workspace_id: str, rule_id: str, text: str, description: str = ""
    ) -> int:
        """Validate and store a rule; it governs this instance's next decision."""
        version = await self.rules_store.put_rule(workspace_id, rule_id, text, description)
        await self._forget(workspace_id)
        return version

    async def delete_rule(self, workspace_id: str, rule_id: str) -> int:
        """Remove a rule; the change governs this instance's next decision."""
        version = await self.rules_store.delete_rule(workspace_id, rule_id)
        await self._forget(workspace_id)
        return version

    async def _forget(self, workspace_id: str) -> None:
        # Under the lock, so a refresh that read the old version before our write
        # cannot put its stale result back after we dropped it.
        async with self._locks.setdefault(workspace_id, asyncio.Lock()):
            self._loaded.pop(workspace_id, None)
