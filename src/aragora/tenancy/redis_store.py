"""Tenancy on Redis, next to the control plane's own keys.

Keys (``<prefix>`` is the deployment's ``key_prefix``; times in ms on the store clock).
All share the hash tag ``{tenancy}``, so they live in one Redis Cluster slot and every
script below touches one slot only:

``<prefix>{tenancy}:workspace:<ws>``
    hash: name, plan, created and ``q.<quota>`` per quota override ("none" = unlimited)
``<prefix>{tenancy}:token:<ws>:<token id>``
    hash: id, ws, role, hash (keyed hash of the secret), created, expires, revoked, by
``<prefix>{tenancy}:tokens:<ws>``
    set: the workspace's token ids
``<prefix>{tenancy}:agent_owners:<ws>``
    hash: agent id -> owning token id
``<prefix>{tenancy}:workspaces``
    set: every workspace name
``<prefix>{tenancy}:token_hashes``
    hash: token hash -> ``<ws>/<token id>`` (authentication looks tokens up here)
``<prefix>{tenancy}:token_ids``
    hash: token id -> ws (revoking and listing by id)

Writes that touch several keys are Lua scripts from ``lua/`` (each documents its KEYS
and ARGV), so they are atomic. Scripts read ``TIME`` plus the store's clock offset, the
same clock as every other decision of the control plane. Tenancy data is small and
written rarely; keeping it in one slot is the price of finding a token by its hash.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from redis.commands.core import AsyncScript

from aragora.control_plane.errors import StoreUnavailableError
from aragora.store.redis import RedisStore
from aragora.tenancy.errors import (
    TokenExistsError,
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
)
from aragora.tenancy.models import Role, TokenInfo, Workspace
from aragora.tenancy.quotas import build_workspace
from aragora.tenancy.store import TenancyStore

_UNLIMITED: Final = "none"
_QUOTA_PREFIX: Final = "q."


def _load_script(name: str) -> str:
    return (resources.files("aragora.tenancy") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _ms(value: float) -> int:
    return round(value * 1000)


def _s(value: str | None) -> float | None:
    return None if value is None or value == "" else int(value) / 1000


def _override_args(overrides: dict[str, int | None]) -> list[str]:
    args: list[str] = []
    for name, value in sorted(overrides.items()):
        args += [name, _UNLIMITED if value is None else str(value)]
    return args


def _workspace(h: dict[str, str]) -> Workspace:
    overrides = {
        field[len(_QUOTA_PREFIX) :]: None if value == _UNLIMITED else int(value)
        for field, value in h.items()
        if field.startswith(_QUOTA_PREFIX)
    }
    return build_workspace(h["name"], h["plan"], overrides, int(h["created"]) / 1000)


def _token(h: dict[str, str]) -> TokenInfo:
    return TokenInfo(
        token_id=h["id"],
        workspace_id=h["ws"],
        role=Role(h["role"]),
        created_at=int(h["created"]) / 1000,
        expires_at=_s(h.get("expires")),
        revoked_at=_s(h.get("revoked")),
        created_by=h.get("by"),
    )


class RedisTenancyStore(TenancyStore):
    """Tenancy data in the same Redis, under the same ``key_prefix``, as ``store``.

    Every instance of a deployment sees every write at once: nothing is cached.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._scripts: dict[str, AsyncScript] = {}

    # -- keys ------------------------------------------------------------------------
    # Every tenancy key shares the hash tag {tenancy}: a token is found by its hash
    # before its workspace is known, so the token index and the records it points to
    # must live in one Redis Cluster slot for the scripts to update them atomically.
    def _key(self, suffix: str) -> str:
        return self._store.global_key("{tenancy}:" + suffix)

    def _workspace_key(self, ws: str) -> str:
        return self._key("workspace:" + ws)

    def _token_key(self, ws: str, token_id: str) -> str:
        return self._key(f"token:{ws}:{token_id}")

    def _tokens_key(self, ws: str) -> str:
        return self._key("tokens:" + ws)

    def _owners_key(self, ws: str) -> str:
        return self._key("agent_owners:" + ws)

    @property
    def _workspaces_key(self) -> str:
        return self._key("workspaces")

    @property
    def _hashes_key(self) -> str:
        return self._key("token_hashes")

    @property
    def _ids_key(self) -> str:
        return self._key("token_ids")

    # -- running commands --------------------------------------------------------------
    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._store.client.register_script(_load_script(name))
            self._scripts[name] = script
        return await self._store.call(lambda: script(keys=keys, args=args))

    async def _hgetall_many(self, keys: Sequence[str]) -> list[dict[str, str]]:
        async def fetch() -> list[dict[str, str]]:
            pipe = self._store.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            rows: list[dict[str, str]] = await pipe.execute()
            return rows

        return [] if not keys else await self._store.call(fetch)

    async def now(self) -> float:
        return await self._store.now()

    # -- workspaces ------------------------------------------------------------------
    async def _create_workspace(
        self, name: str, plan: str, overrides: dict[str, int | None]
    ) -> Workspace:
        reply = await self._script(
            "create_workspace",
            [self._workspace_key(name), self._workspaces_key],
            [self._store.clock_offset_ms(), name, plan, *_override_args(overrides)],
        )
        if reply[0] == "err":
            raise WorkspaceExistsError(name)
        return build_workspace(name, plan, overrides, int(reply[1]) / 1000)

    async def _get_workspace(self, name: str) -> Workspace:
        key = self._workspace_key(name)
        h: dict[str, str] = await self._store.call(lambda: self._store.client.hgetall(key))
        if not h:
            raise WorkspaceNotFoundError(name)
        return _workspace(h)

    async def _list_workspaces(self) -> Sequence[Workspace]:
        key = self._workspaces_key
        names: set[str] = await self._store.call(lambda: self._store.client.smembers(key))
        rows = await self._hgetall_many([self._workspace_key(n) for n in sorted(names)])
        return [_workspace(h) for h in rows if h]

    async def _update_quotas(
        self, name: str, overrides: dict[str, int | None], plan: str | None, replace: bool
    ) -> Workspace:
        reply = await self._script(
            "update_quotas",
            [self._workspace_key(name)],
            [plan or "", "1" if replace else "0", *_override_args(overrides)],
        )
        if reply[0] == "err":
            raise WorkspaceNotFoundError(name)
        return _workspace(_pairs(reply[1]))

    # -- tokens ----------------------------------------------------------------------
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
        reply = await self._script(
            "put_token",
            [
                self._workspace_key(workspace),
                self._token_key(workspace, token_id),
                self._tokens_key(workspace),
                self._hashes_key,
                self._ids_key,
            ],
            [
                self._store.clock_offset_ms(),
                workspace,
                token_id,
                token_hash,
                role.value,
                "" if expires_at is None else _ms(expires_at),
                created_by or "",
                "upsert" if upsert else "create",
            ],
        )
        if reply[0] == "err":
            if reply[1] == "no_workspace":
                raise WorkspaceNotFoundError(workspace)
            raise TokenExistsError(token_id)
        return _token(_pairs(reply[1]))

    async def _lookup_token(self, token_hash: str) -> TokenInfo | None:
        hashes_key = self._hashes_key
        ref: str | None = await self._store.call(
            lambda: self._store.client.hget(hashes_key, token_hash)
        )
        if ref is None:
            return None
        workspace, _, token_id = ref.partition("/")
        key = self._token_key(workspace, token_id)
        h: dict[str, str] = await self._store.call(lambda: self._store.client.hgetall(key))
        if not h or not hmac.compare_digest(h.get("hash", ""), token_hash):
            return None
        return _token(h)

    async def _workspace_of_token(self, token_id: str) -> str:
        ids_key = self._ids_key
        workspace: str | None = await self._store.call(
            lambda: self._store.client.hget(ids_key, token_id)
        )
        if workspace is None:
            raise TokenNotFoundError(token_id)
        return workspace

    async def _get_token(self, token_id: str) -> TokenInfo:
        key = self._token_key(await self._workspace_of_token(token_id), token_id)
        h: dict[str, str] = await self._store.call(lambda: self._store.client.hgetall(key))
        if not h:
            raise TokenNotFoundError(token_id)
        return _token(h)

    async def _list_tokens(self, workspace: str | None) -> Sequence[TokenInfo]:
        client = self._store.client
        if workspace is None:
            ids_key = self._ids_key
            by_id: dict[str, str] = await self._store.call(lambda: client.hgetall(ids_key))
            keys = [self._token_key(ws, token_id) for token_id, ws in by_id.items()]
        else:
            ws_key, tokens_key = self._workspace_key(workspace), self._tokens_key(workspace)
            if not await self._store.call(lambda: client.exists(ws_key)):
                raise WorkspaceNotFoundError(workspace)
            ids: set[str] = await self._store.call(lambda: client.smembers(tokens_key))
            keys = [self._token_key(workspace, token_id) for token_id in ids]
        return [_token(h) for h in await self._hgetall_many(keys) if h]

    async def _revoke_token(self, token_id: str) -> TokenInfo:
        workspace = await self._workspace_of_token(token_id)
        reply = await self._script(
            "revoke_token",
            [self._token_key(workspace, token_id)],
            [self._store.clock_offset_ms()],
        )
        if reply[0] == "err":
            raise TokenNotFoundError(token_id)
        return _token(_pairs(reply[1]))

    # -- agent owners ----------------------------------------------------------------
    async def _claim_agent_owner(self, workspace: str, agent_id: str, token_id: str) -> bool:
        reply = await self._script(
            "claim_agent_owner",
            [self._owners_key(workspace), self._token_key(workspace, "")],
            [self._store.clock_offset_ms(), agent_id, token_id],
        )
        if reply not in (0, 1):
            raise StoreUnavailableError(f"unexpected store answer {reply!r}")
        return bool(reply)

    async def _agent_owner(self, workspace: str, agent_id: str) -> str | None:
        key = self._owners_key(workspace)
        owner: str | None = await self._store.call(lambda: self._store.client.hget(key, agent_id))
        return owner

    async def _release_agent_owner(self, workspace: str, agent_id: str) -> None:
        key = self._owners_key(workspace)
        await self._store.call(lambda: self._store.client.hdel(key, agent_id))
