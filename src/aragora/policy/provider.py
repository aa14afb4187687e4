"""``AragoraFlagProvider``: the workspace feature flags behind the OpenFeature API.

    provider = AragoraFlagProvider(policy_store)
    await provider.refresh("acme")                  # load acme's flags
    openfeature.api.set_provider(provider)
    client = openfeature.api.get_client()
    ctx = EvaluationContext(targeting_key="user-7", attributes={"workspace_id": "acme"})
    client.get_boolean_value("new-scheduler", False, ctx)

The workspace comes from the evaluation context attribute ``workspace_id``; the
targeting key buckets percentage rollouts (see ``aragora.policy.flags``).

OpenFeature evaluates synchronously (``get_boolean_value`` is a plain call), and the
store is asynchronous, so the provider answers from an in-process snapshot of each
workspace's flags and never does I/O while evaluating. The snapshot changes only in
``refresh`` (every loaded workspace, plus any named) or ``ensure`` (one workspace, at
most every ``refresh_s``); each reads the workspace's flag version first and reloads
the flags only when it moved. The owner of the provider calls them, for example
``await provider.ensure(principal.workspace_id)`` before evaluating in a request, or
``refresh()`` from a background loop. A workspace never loaded answers with
``PROVIDER_NOT_READY`` and the caller's default value.

:meth:`AragoraFlagProvider.invalidate` (wired to the cache invalidation bus by
``PolicyEngine.enable_cache``) marks a workspace's snapshot as due, so the next
``ensure`` re-reads it whatever ``refresh_s`` says; until then the old snapshot keeps
answering, since evaluation cannot wait for the store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import (
    FlagMetadata,
    FlagResolutionDetails,
    FlagValueType,
    Reason,
)
from openfeature.provider import AbstractProvider, Metadata

from aragora.policy.flags import Flag, FlagStore, ValueKind

WORKSPACE_ATTRIBUTE = "workspace_id"
DEFAULT_FLAGS_REFRESH_S = 1.0

_T = TypeVar("_T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


@dataclass(frozen=True, slots=True)
class _WorkspaceFlags:
    version: int
    flags: Mapping[str, Flag]
    checked_at_s: float


class AragoraFlagProvider(AbstractProvider):
    """OpenFeature provider over the flags in a ``FlagStore`` (see the module docstring)."""

    def __init__(
        self,
        store: FlagStore,
        *,
        refresh_s: float = DEFAULT_FLAGS_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._store = store
        self.refresh_s = refresh_s
        self._monotonic = monotonic
        # Replaced as a whole, never mutated: evaluations on other threads see either
        # the old or the new snapshot.
        self._snapshot: Mapping[str, _WorkspaceFlags] = {}
        self._generation = 0

    def invalidate(self, workspace_id: str | None) -> None:
        """Make the next :meth:`ensure` of ``workspace_id`` (``None``: of every
        workspace) re-read the store; the current snapshot answers until then."""
        self._generation += 1
        self._snapshot = {
            ws: loaded
            if workspace_id is not None and ws != workspace_id
            else _WorkspaceFlags(loaded.version, loaded.flags, -math.inf)
            for ws, loaded in self._snapshot.items()
        }

    async def refresh(self, *workspace_ids: str) -> None:
        """Bring every loaded workspace, and each of ``workspace_ids``, up to date."""
        for workspace_id in dict.fromkeys([*self._snapshot, *workspace_ids]):
            await self._load(workspace_id)

    async def ensure(self, workspace_id: str) -> None:
        """Load ``workspace_id`` if missing, or re-check it if older than ``refresh_s``."""
        current = self._snapshot.get(workspace_id)
        if current is None or self._monotonic() - current.checked_at_s >= self.refresh_s:
            await self._load(workspace_id)

    async def _load(self, workspace_id: str) -> None:
        now_s = self._monotonic()
        generation = self._generation
        current = self._snapshot.get(workspace_id)
        if current is not None and await self._store.flags_version(workspace_id) == current.version:
            loaded = _WorkspaceFlags(current.version, current.flags, now_s)
        else:
            version, flags = await self._store.get_flags(workspace_id)
            loaded = _WorkspaceFlags(version, {flag.key: flag for flag in flags}, now_s)
        if generation != self._generation:
            # Invalidated while reading: keep what was read, but check again next time.
            loaded = _WorkspaceFlags(loaded.version, loaded.flags, -math.inf)
        self._snapshot = {**self._snapshot, workspace_id: loaded}

    # -- OpenFeature -------------------------------------------------------------------
    def get_metadata(self) -> Metadata:
        return Metadata(name="aragora")

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, ("boolean",), bool)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, ("string",), str)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, ("integer",), int)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        kinds: tuple[ValueKind, ...] = ("float", "integer")
        return self._resolve(flag_key, default_value, evaluation_context, kinds, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(flag_key, default_value, evaluation_context, ("object",), _as_object)

    def _resolve(
        self,
        flag_key: str,
        default_value: _T,
        context: EvaluationContext | None,
        kinds: tuple[ValueKind, ...],
        convert: Callable[[Any], _T],
    ) -> FlagResolutionDetails[_T]:
        workspace_id = context.attributes.get(WORKSPACE_ATTRIBUTE) if context else None
        if not isinstance(workspace_id, str) or not workspace_id:
            message = f"the evaluation context has no {WORKSPACE_ATTRIBUTE!r} attribute"
            return _error(default_value, ErrorCode.INVALID_CONTEXT, message)
        workspace = self._snapshot.get(workspace_id)
        if workspace is None:
            message = f"flags of workspace {workspace_id!r} are not loaded (refresh first)"
            return _error(default_value, ErrorCode.PROVIDER_NOT_READY, message)
        flag = workspace.flags.get(flag_key)
        if flag is None:
            message = f"no flag {flag_key!r} in workspace {workspace_id!r}"
            return _error(default_value, ErrorCode.FLAG_NOT_FOUND, message)
        if flag.kind not in kinds:
            message = f"flag {flag_key!r} holds {flag.kind} values, not {kinds[0]}"
            return _error(default_value, ErrorCode.TYPE_MISMATCH, message)
        resolution = flag.evaluate(context.targeting_key if context else None)
        metadata: FlagMetadata = {"workspace_id": workspace_id, "flags_version": workspace.version}
        if resolution.variant is None:
            return FlagResolutionDetails(
                value=default_value, reason=Reason.DISABLED, flag_metadata=metadata
            )
        return FlagResolutionDetails(
            value=convert(resolution.value),
            reason=Reason(resolution.reason),
            variant=resolution.variant,
            flag_metadata=metadata,
        )


def _as_object(value: Any) -> ObjectValue:
    result: ObjectValue = value
    return result


def _error(default_value: _T, code: ErrorCode, message: str) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(
        value=default_value, reason=Reason.ERROR, error_code=code, error_message=message
    )
