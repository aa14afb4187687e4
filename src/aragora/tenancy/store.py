"""Where workspaces, API tokens and agent owners are kept: one interface, two backends.

:class:`TenancyStore` validates every argument in its public methods and then calls
one primitive of the backend; each primitive that writes is one atomic step (one Lua
script on Redis, one transaction on SQLite), so concurrent instances never see a
half-made workspace or token. Times are epoch seconds on the control-plane store's
clock, the same clock task leases use.

Stored per token: its public id, workspace, role, times, creator and the keyed hash of
its secret (:func:`aragora.tenancy.tokens.token_hash`). The secret itself is never
passed to a store. :class:`TokenInfo` values never carry the hash.

Agent owners answer "an agent token may act only as the agents it registered": the
first token to register an agent id in a workspace owns it. A token that is revoked,
expired or gone no longer holds its agents, so a replacement token can take them
over (rotating an agent's token needs no manual step).
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from aragora.control_plane.errors import ConfigError, ValidationError
from aragora.control_plane.models import validate_name as validate_object_name
from aragora.tenancy.models import Role, TokenInfo, Workspace
from aragora.tenancy.quotas import (
    QuotaOverrides,
    validate_name,
    validate_plan,
    validate_quota_overrides,
)
from aragora.tenancy.tokens import TOKEN_ID_RE

if TYPE_CHECKING:
    from aragora.store.base import Store

_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")
MAX_CREATED_BY_CHARS: Final = 256


def validate_role(role: object) -> Role:
    """A :class:`Role` or its value."""
    if isinstance(role, Role):
        return role
    if isinstance(role, str):
        try:
            return Role(role)
        except ValueError:
            pass
    raise ValidationError("role", f"must be one of {', '.join(r.value for r in Role)}")


def validate_agent_id(agent_id: object) -> str:
    """The rules of agent ids of the control plane."""
    checked = validate_object_name(agent_id, "agent_id")
    if "\n" in checked:  # the shared pattern ends in "$", which lets a final newline through
        raise ValidationError("agent_id", "must not contain a newline")
    return checked


def validate_token_id(token_id: object) -> str:
    """``tok_`` followed by 1-64 letters, digits or ``_``."""
    if not isinstance(token_id, str) or not TOKEN_ID_RE.fullmatch(token_id):
        raise ValidationError("token_id", "must be 'tok_' followed by 1-64 letters, digits or '_'")
    return token_id


def validate_token_hash(token_hash: object) -> str:
    """64 lowercase hex characters, as made by :func:`~aragora.tenancy.tokens.token_hash`."""
    if not isinstance(token_hash, str) or not _HASH_RE.fullmatch(token_hash):
        raise ValidationError("token_hash", "must be 64 lowercase hex characters")
    return token_hash


def _validate_created_by(created_by: object) -> str | None:
    if created_by is None:
        return None
    if not isinstance(created_by, str) or not 1 <= len(created_by) <= MAX_CREATED_BY_CHARS:
        raise ValidationError(
            "created_by", f"must be null or a string of 1-{MAX_CREATED_BY_CHARS} characters"
        )
    return created_by


def _validate_expires_at(expires_at: object) -> float | None:
    if expires_at is None:
        return None
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise ValidationError("expires_at", "must be null or epoch seconds")
    if not math.isfinite(expires_at) or expires_at <= 0:
        raise ValidationError("expires_at", "must be a finite, positive epoch time in seconds")
    return float(expires_at)


class TenancyStore(abc.ABC):
    """Workspaces, API tokens and agent owners on one control-plane store."""

    # -- clock -----------------------------------------------------------------------
    @abc.abstractmethod
    async def now(self) -> float:
        """The store clock in epoch seconds (test offset included)."""

    # -- workspaces ------------------------------------------------------------------
    async def create_workspace(
        self, name: str, plan: str = "standard", quota_overrides: QuotaOverrides | None = None
    ) -> Workspace:
        """Create a workspace; :class:`WorkspaceExistsError` if the name is taken."""
        return await self._create_workspace(
            validate_name(name), validate_plan(plan), validate_quota_overrides(quota_overrides)
        )

    async def get_workspace(self, name: str) -> Workspace:
        """The workspace, or :class:`WorkspaceNotFoundError`."""
        return await self._get_workspace(validate_name(name))

    async def list_workspaces(self) -> list[Workspace]:
        """Every workspace, sorted by name."""
        return sorted(await self._list_workspaces(), key=lambda w: w.name)

    async def update_quotas(
        self,
        name: str,
        quota_overrides: QuotaOverrides,
        *,
        plan: str | None = None,
        replace: bool = False,
    ) -> Workspace:
        """Set quota overrides (merged into the existing ones, or replacing them all
        with ``replace=True``; ``replace=True`` with ``{}`` returns to the plan's
        quotas) and optionally change the plan. :class:`WorkspaceNotFoundError` if
        there is no such workspace."""
        return await self._update_quotas(
            validate_name(name),
            validate_quota_overrides(quota_overrides),
            None if plan is None else validate_plan(plan),
            replace,
        )

    # -- tokens ----------------------------------------------------------------------
    async def create_token(
        self,
        workspace: str,
        role: Role,
        token_hash: str,
        token_id: str,
        expires_at: float | None = None,
        created_by: str | None = None,
    ) -> TokenInfo:
        """Store a new token of ``workspace`` by the keyed hash of its secret.

        :class:`WorkspaceNotFoundError` if the workspace does not exist;
        :class:`TokenExistsError` if the id or the hash is already stored.
        """
        return await self._create_token(
            validate_name(workspace),
            validate_role(role),
            validate_token_hash(token_hash),
            validate_token_id(token_id),
            _validate_expires_at(expires_at),
            _validate_created_by(created_by),
            upsert=False,
        )

    async def upsert_token(
        self,
        workspace: str,
        role: Role,
        token_hash: str,
        token_id: str,
        created_by: str | None = None,
    ) -> TokenInfo:
        """Make ``token_id`` the token with ``token_hash`` (for fixed ids such as the
        bootstrap admin token), in one atomic step.

        Already so: nothing changes, so a revocation sticks. The id holds another hash:
        the old hash stops working and the token starts afresh (new ``created_at``, not
        revoked). :class:`TokenExistsError` if the hash belongs to another token or the
        id to another workspace.
        """
        return await self._create_token(
            validate_name(workspace),
            validate_role(role),
            validate_token_hash(token_hash),
            validate_token_id(token_id),
            None,
            _validate_created_by(created_by),
            upsert=True,
        )

    async def lookup_token(self, token_hash: str) -> TokenInfo | None:
        """The token whose secret has this keyed hash, revoked or expired ones
        included (the caller decides), or ``None``."""
        return await self._lookup_token(validate_token_hash(token_hash))

    async def get_token(self, token_id: str) -> TokenInfo:
        """The token with this id, or :class:`TokenNotFoundError`."""
        return await self._get_token(validate_token_id(token_id))

    async def list_tokens(self, workspace: str | None = None) -> list[TokenInfo]:
        """Tokens of one workspace (:class:`WorkspaceNotFoundError` if unknown) or of
        all, revoked and expired ones included, oldest first."""
        name = None if workspace is None else validate_name(workspace)
        tokens = await self._list_tokens(name)
        return sorted(tokens, key=lambda t: (t.created_at, t.token_id))

    async def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke the token now; revoking again keeps the first ``revoked_at``.
        :class:`TokenNotFoundError` if there is no such token."""
        return await self._revoke_token(validate_token_id(token_id))

    # -- agent owners ----------------------------------------------------------------
    async def claim_agent_owner(self, workspace: str, agent_id: str, token_id: str) -> bool:
        """Atomically make ``token_id`` the owner of the agent unless another token
        owns it: True if the token owns it now (newly or already), False if another,
        still active token does. A revoked, expired or deleted owner is replaced."""
        return await self._claim_agent_owner(
            validate_name(workspace),
            validate_agent_id(agent_id),
            validate_token_id(token_id),
        )

    async def agent_owner(self, workspace: str, agent_id: str) -> str | None:
        """The id of the token that owns the agent, or ``None``."""
        return await self._agent_owner(validate_name(workspace), validate_agent_id(agent_id))

    async def release_agent_owner(self, workspace: str, agent_id: str) -> None:
        """Forget the agent's owner (e.g. once the agent is deregistered)."""
        await self._release_agent_owner(validate_name(workspace), validate_agent_id(agent_id))

    # -- primitives of a backend (arguments already validated) ------------------------
    @abc.abstractmethod
    async def _create_workspace(
        self, name: str, plan: str, overrides: dict[str, int | None]
    ) -> Workspace: ...

    @abc.abstractmethod
    async def _get_workspace(self, name: str) -> Workspace: ...

    @abc.abstractmethod
    async def _list_workspaces(self) -> Sequence[Workspace]: ...

    @abc.abstractmethod
    async def _update_quotas(
        self, name: str, overrides: dict[str, int | None], plan: str | None, replace: bool
    ) -> Workspace: ...

    @abc.abstractmethod
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
    ) -> TokenInfo: ...

    @abc.abstractmethod
    async def _lookup_token(self, token_hash: str) -> TokenInfo | None: ...

    @abc.abstractmethod
    async def _get_token(self, token_id: str) -> TokenInfo: ...

    @abc.abstractmethod
    async def _list_tokens(self, workspace: str | None) -> Sequence[TokenInfo]: ...

    @abc.abstractmethod
    async def _revoke_token(self, token_id: str) -> TokenInfo: ...

    @abc.abstractmethod
    async def _claim_agent_owner(self, workspace: str, agent_id: str, token_id: str) -> bool: ...

    @abc.abstractmethod
    async def _agent_owner(self, workspace: str, agent_id: str) -> str | None: ...

    @abc.abstractmethod
    async def _release_agent_owner(self, workspace: str, agent_id: str) -> None: ...


def create_tenancy_store(store: Store) -> TenancyStore:
    """The tenancy store kept in the same place as ``store`` (Redis or SQLite)."""
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

    if isinstance(store, RedisStore):
        from aragora.tenancy.redis_store import RedisTenancyStore

        return RedisTenancyStore(store)
    if isinstance(store, SqliteStore):
        from aragora.tenancy.sqlite_store import SqliteTenancyStore

        return SqliteTenancyStore(store)
    raise ConfigError(f"no tenancy store for {type(store).__name__}")
