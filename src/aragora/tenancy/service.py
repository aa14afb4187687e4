"""Issuing and checking API tokens, and the first admin token of a deployment.

:class:`TenancyService` is what the HTTP layer and the CLI use: it turns a presented
bearer token into a :class:`Principal` and issues tokens whose secret is returned once
and never stored (the store keeps a keyed hash).

Authentication reads the store on every call, with no cache, so a revocation takes
effect at once on every instance of a deployment.
"""

from __future__ import annotations

import contextlib
import math
from typing import Final

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
        info = await self.store.lookup_token(self.hash_token(token))
        if info is None:
            raise AuthenticationError("unknown")
        if info.revoked_at is not None:
            raise AuthenticationError("revoked")
        if info.expires_at is not None and info.expires_at <= await self.store.now():
            raise AuthenticationError("expired")
        return info.principal()

    async def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token at once on every instance; idempotent.
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
