"""Issuing and checking API tokens, and the first admin token of a deployment.

:class:`TenancyService` is what the HTTP layer and the CLI use: it turns a presented
bearer token into a :class:`Principal` and issues tokens whose secret is returned once
and never stored (the store keeps a keyed hash).

Authentication may answer from a short-lived in-process cache of token hash →
principal (:meth:`TenancyService.enable_cache`, which the server turns on with
``cache_ttl_s``). Every token write through the service's store (create, revoke,
replace) publishes an invalidation after it commits, so a revoked token is refused at
once on the instance that revoked it and, over Redis pub/sub, within moments on every
other instance; should that message be missed, the entry still expires after
``cache_ttl_s``. Without :meth:`~TenancyService.enable_cache` every call reads the store.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Final

from aragora.cache import InvalidationBus, TTLCache
from aragora.control_plane.errors import ConfigError, ValidationError
from aragora.tenancy.errors import AuthenticationError, WorkspaceExistsError
from aragora.tenancy.keyfiles import SECRET_KEY_BYTES
from aragora.tenancy.models import Principal, Role, TokenInfo, Workspace
from aragora.tenancy.quotas import QuotaOverrides
from aragora.tenancy.store import TenancyStore, validate_role
from aragora.tenancy.tokens import (
    TOKEN_PREFIX,
    generate_token,
    has_token_format,
    looks_valid,
    token_hash,
)

DEFAULT_WORKSPACE: Final = "default"
BOOTSTRAP_TOKEN_ID: Final = "tok_bootstrap"
"""The id the token given as ``ARAGORA_ADMIN_TOKEN`` is stored under."""
BOOTSTRAP_CREATED_BY: Final = "bootstrap"
MAX_PRESENTED_TOKEN_CHARS: Final = 4096
"""Longer bearer tokens are refused as malformed without hashing them."""
TOKEN_NAMESPACE: Final = "token"
"""Invalidation namespace of cached principals; the key is the token id."""
WORKSPACE_NAMESPACE: Final = "workspace"
"""Invalidation namespace of a workspace's settings and quotas; the key is its name."""
AGENT_OWNER_NAMESPACE: Final = "agent_owner"
"""Invalidation namespace of the token that owns an agent; the key is ``<ws>/<agent>``."""


_CachedPrincipal = tuple[Principal, float | None]
"""A cached principal and its token's expiry (store clock), if any."""


class InvalidatingTenancyStore(TenancyStore):
    """A :class:`TenancyStore` that publishes an invalidation after every write that
    commits: ``token:<token id>`` for token writes, ``workspace:<name>`` for workspace
    writes, ``agent_owner:<ws>/<agent>`` when an agent's owner changes.

    The owner of an agent, read on every request an agent token makes, is cached for
    ``owner_ttl_s`` (0: not cached). Only an owner is cached, never its absence, so an
    agent registered through another process is never refused for a stale "no owner".
    Other reads go straight through.
    """

    def __init__(
        self,
        inner: TenancyStore,
        bus: InvalidationBus,
        *,
        owner_ttl_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.bus = bus
        self._owners: TTLCache[str] = TTLCache(owner_ttl_s, monotonic=monotonic)
        bus.subscribe(AGENT_OWNER_NAMESPACE, self._drop_owner)

    def _drop_owner(self, key: str | None) -> None:
        if key is None:
            self._owners.clear()
        else:
            self._owners.invalidate(key)

    async def now(self) -> float:
        return await self.inner.now()

    async def _create_workspace(
        self, name: str, plan: str, overrides: dict[str, int | None]
    ) -> Workspace:
        workspace = await self.inner._create_workspace(name, plan, overrides)
        await self.bus.publish(WORKSPACE_NAMESPACE, workspace.name)
        return workspace

    async def _get_workspace(self, name: str) -> Workspace:
        return await self.inner._get_workspace(name)

    async def _list_workspaces(self) -> Sequence[Workspace]:
        return await self.inner._list_workspaces()

    async def _update_quotas(
        self, name: str, overrides: dict[str, int | None], plan: str | None, replace: bool
    ) -> Workspace:
        workspace = await self.inner._update_quotas(name, overrides, plan, replace)
        await self.bus.publish(WORKSPACE_NAMESPACE, workspace.name)
        return workspace

    async def _create_token(
        self,
        workspace: str,
        role: Role,
        token_hash: str,
        token_id: str,
        expires_at: float | None,
        created_by: str | None,
        *,
        upsert: bool,
    ) -> TokenInfo:
        info = await self.inner._create_token(
            workspace, role, token_hash, token_id, expires_at, created_by, upsert=upsert
        )
        # An upsert may have replaced the hash of the id: its old principal must go.
        await self.bus.publish(TOKEN_NAMESPACE, info.token_id)
        return info

    async def _lookup_token(self, token_hash: str) -> TokenInfo | None:
        return await self.inner._lookup_token(token_hash)

    async def _get_token(self, token_id: str) -> TokenInfo:
        return await self.inner._get_token(token_id)

    async def _list_tokens(self, workspace: str | None) -> Sequence[TokenInfo]:
        return await self.inner._list_tokens(workspace)

    async def _revoke_token(self, token_id: str) -> TokenInfo:
        info = await self.inner._revoke_token(token_id)
        await self.bus.publish(TOKEN_NAMESPACE, info.token_id)
        return info

    async def _claim_agent_owner(self, workspace: str, agent_id: str, token_id: str) -> bool:
        claimed = await self.inner._claim_agent_owner(workspace, agent_id, token_id)
        if claimed:
            await self.bus.publish(AGENT_OWNER_NAMESPACE, f"{workspace}/{agent_id}")
        return claimed

    async def _agent_owner(self, workspace: str, agent_id: str) -> str | None:
        key = f"{workspace}/{agent_id}"
        cached = self._owners.get(key)
        if cached is not None:
            return cached
        generation = self._owners.generation
        owner = await self.inner._agent_owner(workspace, agent_id)
        if owner is not None:
            self._owners.put(key, owner, generation=generation)
        return owner

    async def _release_agent_owner(self, workspace: str, agent_id: str) -> None:
        await self.inner._release_agent_owner(workspace, agent_id)
        await self.bus.publish(AGENT_OWNER_NAMESPACE, f"{workspace}/{agent_id}")


class TenancyService:
    """Workspaces and API tokens over a :class:`TenancyStore`.

    ``secret_key`` (at least 32 bytes) keys the token hashes; every instance of a
    deployment must use the same one (see
    :func:`aragora.tenancy.keyfiles.load_server_secret`).
    """

    def __init__(self, store: TenancyStore, secret_key: bytes) -> None:
        if len(secret_key) < SECRET_KEY_BYTES:
            raise ConfigError(f"the secret key must be at least {SECRET_KEY_BYTES} bytes")
        self.store = store
        self._secret_key = secret_key
        self._principals: TTLCache[_CachedPrincipal] = TTLCache(0.0)
        self._clock: Callable[[], float] = time.time

    def enable_cache(
        self,
        bus: InvalidationBus,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Cache authenticated principals for up to ``ttl_s`` (0: no cache) and publish
        every workspace and token write of :attr:`store` on ``bus`` once it commits.

        A cached token is re-checked in the store once ``clock`` (an estimate of the
        store clock, in epoch seconds) reaches its expiry; failed authentications are
        never cached, so a token issued a moment ago works at once.
        """
        if not isinstance(self.store, InvalidatingTenancyStore):
            self.store = InvalidatingTenancyStore(
                self.store, bus, owner_ttl_s=ttl_s, monotonic=monotonic
            )
        self._principals = TTLCache(ttl_s, monotonic=monotonic)
        self._clock = clock
        bus.subscribe(TOKEN_NAMESPACE, self._drop_token)

    def _drop_token(self, token_id: str | None) -> None:
        if token_id is None:
            self._principals.clear()
        else:
            self._principals.invalidate_where(lambda c: c[0].token_id == token_id)

    def hash_token(self, token: str) -> str:
        """The keyed hash the store keeps for ``token``."""
        return token_hash(self._secret_key, token)

    # -- workspaces ------------------------------------------------------------------
    async def create_workspace(
        self, name: str, plan: str = "standard", quota_overrides: QuotaOverrides | None = None
    ) -> Workspace:
        """Create a workspace; :class:`WorkspaceExistsError` if the name is taken."""
        return await self.store.create_workspace(name, plan, quota_overrides)

    # -- tokens ----------------------------------------------------------------------
    async def issue_token(
        self,
        workspace: str,
        role: Role,
        expires_in_s: float | None = None,
        created_by: str | None = None,
    ) -> tuple[TokenInfo, str]:
        """Issue a token of ``workspace`` with ``role``; returns its info and its secret.

        The secret is shown to the caller this once: only its keyed hash is stored.
        ``expires_in_s`` counts from now on the store clock; ``None`` never expires.
        ``created_by`` records who asked (e.g. a principal's subject) for audit.
        """
        checked_role = validate_role(role)
        expires_at: float | None = None
        if expires_in_s is not None:
            if (
                isinstance(expires_in_s, bool)
                or not isinstance(expires_in_s, int | float)
                or not math.isfinite(expires_in_s)
                or expires_in_s <= 0
            ):
                raise ValidationError("expires_in_s", "must be null or a positive number")
            expires_at = await self.store.now() + expires_in_s
        token_id, secret = generate_token()
        info = await self.store.create_token(
            workspace, checked_role, self.hash_token(secret), token_id, expires_at, created_by
        )
        return info, secret

    async def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for, or :class:`AuthenticationError`.

        A token with the ``acp_`` prefix must pass :func:`looks_valid` (format and
        checksum) before the store is asked. Any other non-empty string is looked up
        too, because the bootstrap admin token may be an arbitrary string. Reasons:
        ``malformed``, ``checksum``, ``unknown``, ``revoked``, ``expired``.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_PRESENTED_TOKEN_CHARS:
            raise AuthenticationError("malformed")
        if token.startswith(TOKEN_PREFIX) and not looks_valid(token):
            raise AuthenticationError("checksum" if has_token_format(token) else "malformed")
        hashed = self.hash_token(token)
        cached = self._principals.get(hashed)
        if cached is not None:
            principal, expires_at = cached
            if expires_at is None or self._clock() < expires_at:
                return principal
            self._principals.invalidate(hashed)
        generation = self._principals.generation
        info = await self.store.lookup_token(hashed)
        if info is None:
            raise AuthenticationError("unknown")
        if info.revoked_at is not None:
            raise AuthenticationError("revoked")
        lifetime_s: float | None = None
        if info.expires_at is not None:
            lifetime_s = info.expires_at - await self.store.now()
            if lifetime_s <= 0:
                raise AuthenticationError("expired")
        principal = info.principal()
        self._principals.put(
            hashed, (principal, info.expires_at), generation=generation, ttl_s=lifetime_s
        )
        return principal

    async def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token; idempotent. Refused at once here and, with a cache over
        Redis, within moments on every other instance (at most ``cache_ttl_s``).
        :class:`TokenNotFoundError` if there is no such token."""
        return await self.store.revoke_token(token_id)

    # -- the first admin -------------------------------------------------------------
    async def bootstrap_admin(self, admin_token: str | None) -> str | None:
        """Make sure the deployment can be administered; run at every server start.

        Ensures the workspace ``default`` exists. With ``admin_token`` (the value of
        ``ARAGORA_ADMIN_TOKEN``; any non-empty string) its hash becomes the admin token
        ``tok_bootstrap`` of ``default``: idempotent, a revocation of it sticks until
        the value changes, and a new value replaces the old one. Unsetting the variable
        later does not revoke it; revoke ``tok_bootstrap`` for that.

        Without ``admin_token``, if ``default`` has no active admin token, one is issued
        and its secret returned, for the caller to print once and keep in
        ``<data-dir>/admin.token`` (:func:`aragora.tenancy.keyfiles.write_token_file`);
        otherwise returns ``None``. Two instances starting at the same moment may each
        issue one; both are valid admin tokens.
        """
        with contextlib.suppress(WorkspaceExistsError):
            await self.store.create_workspace(DEFAULT_WORKSPACE)
        if admin_token:
            if admin_token.startswith(TOKEN_PREFIX) and not looks_valid(admin_token):
                raise ConfigError(
                    f"ARAGORA_ADMIN_TOKEN starts with {TOKEN_PREFIX!r} but is not a valid "
                    "token (bad format or checksum); use a token printed by aragora, or a "
                    "value without that prefix"
                )
            if len(admin_token) > MAX_PRESENTED_TOKEN_CHARS:
                raise ConfigError(
                    f"ARAGORA_ADMIN_TOKEN is longer than {MAX_PRESENTED_TOKEN_CHARS} characters"
                )
            await self.store.upsert_token(
                DEFAULT_WORKSPACE,
                Role.ADMIN,
                self.hash_token(admin_token),
                BOOTSTRAP_TOKEN_ID,
                created_by=BOOTSTRAP_CREATED_BY,
            )
            return None
        now = await self.store.now()
        for info in await self.store.list_tokens(DEFAULT_WORKSPACE):
            if info.role is Role.ADMIN and info.is_active(now):
                return None
        _, secret = await self.issue_token(
            DEFAULT_WORKSPACE, Role.ADMIN, created_by=BOOTSTRAP_CREATED_BY
        )
        return secret
