"""Where access rules and feature flags live: ``PolicyStore`` and its factory.

Both are small per-workspace collections of JSON documents with a version counter
that every write increments in the same atomic step (one Lua script on Redis, one
transaction on SQLite). Readers cache by version: reading the counter is one cheap
round trip, so an instance can check for changes often and reload only on a change.

The public methods here own validation and encoding; a backend implements four
primitives over a collection ``kind`` (``"rules"`` or ``"flags"``):
``_read``, ``_put``, ``_delete`` and ``_version``.
"""

from __future__ import annotations

import abc
import json
import re
from typing import TYPE_CHECKING, Any, Literal

from aragora.control_plane.errors import NotFoundError, ValidationError
from aragora.control_plane.models import validate_workspace_id
from aragora.policy.cedar import validate_rule_text
from aragora.policy.flags import Flag
from aragora.policy.models import Rule

if TYPE_CHECKING:
    from aragora.store import Store

Kind = Literal["rules", "flags"]
Documents = dict[str, tuple[dict[str, Any], float]]
"""Document id -> (decoded JSON object, store-clock time of its last write in seconds)."""

MAX_RULES_PER_WORKSPACE = 100
MAX_FLAGS_PER_WORKSPACE = 500
MAX_DESCRIPTION_CHARS = 1_000
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_ID_REASON = "must be 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"


class RuleNotFoundError(NotFoundError):
    """No rule with this id in the workspace."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(f"rule {rule_id!r} not found")
        self.rule_id = rule_id


class FlagNotFoundError(NotFoundError):
    """No feature flag with this key in the workspace."""

    def __init__(self, flag_key: str) -> None:
        super().__init__(f"flag {flag_key!r} not found")
        self.flag_key = flag_key


def validate_document_id(value: object, field: str) -> str:
    """Rule ids and flag keys: short, printable, safe in keys and log lines."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(field, _ID_REASON)
    return value


class PolicyStore(abc.ABC):
    """Versioned access rules and feature flags of every workspace, on one store."""

    # -- rules ---------------------------------------------------------------------
    async def get_rules(self, workspace_id: str) -> tuple[int, list[Rule]]:
        """The rules version and every rule, by id, read in one consistent snapshot."""
        version, docs = await self._read(validate_workspace_id(workspace_id), "rules")
        rules = []
        for rule_id, (body, updated_at) in sorted(docs.items()):
            rules.append(Rule(rule_id, body["text"], body.get("description", ""), updated_at))
        return version, rules

    async def put_rule(
        self, workspace_id: str, rule_id: str, text: str, description: str = ""
    ) -> int:
        """Create or replace a rule after validating its Cedar text; returns the new version.

        Bad text raises ``ValidationError`` with field ``policy`` and Cedar's message.
        """
        validate_workspace_id(workspace_id)
        validate_document_id(rule_id, "rule_id")
        validate_rule_text(text)
        _check_description(description)
        doc = _encode({"text": text, "description": description})
        version = await self._put(workspace_id, "rules", rule_id, doc, MAX_RULES_PER_WORKSPACE)
        if version is None:
            raise ValidationError(
                "rule_id", f"the workspace already has {MAX_RULES_PER_WORKSPACE} rules"
            )
        return version

    async def delete_rule(self, workspace_id: str, rule_id: str) -> int:
        """Remove a rule; returns the new version. Unknown ids raise ``RuleNotFoundError``."""
        validate_workspace_id(workspace_id)
        validate_document_id(rule_id, "rule_id")
        version = await self._delete(workspace_id, "rules", rule_id)
        if version is None:
            raise RuleNotFoundError(rule_id)
        return version

    async def rules_version(self, workspace_id: str) -> int:
        """Counter bumped by every rule write of the workspace (0 before the first)."""
        return await self._version(validate_workspace_id(workspace_id), "rules")

    # -- flags ---------------------------------------------------------------------
    async def get_flags(self, workspace_id: str) -> tuple[int, list[Flag]]:
        """The flags version and every flag, by key, read in one consistent snapshot."""
        version, docs = await self._read(validate_workspace_id(workspace_id), "flags")
        return version, [Flag.from_dict(key, body) for key, (body, _at) in sorted(docs.items())]

    async def put_flag(self, workspace_id: str, flag: Flag) -> int:
        """Create or replace a flag (validated when the ``Flag`` was built)."""
        validate_workspace_id(workspace_id)
        validate_document_id(flag.key, "flag_key")
        version = await self._put(
            workspace_id, "flags", flag.key, _encode(flag.to_dict()), MAX_FLAGS_PER_WORKSPACE
        )
        if version is None:
            raise ValidationError(
                "flag_key", f"the workspace already has {MAX_FLAGS_PER_WORKSPACE} flags"
            )
        return version

    async def delete_flag(self, workspace_id: str, flag_key: str) -> int:
        """Remove a flag; returns the new version. Unknown keys raise ``FlagNotFoundError``."""
        validate_workspace_id(workspace_id)
        validate_document_id(flag_key, "flag_key")
        version = await self._delete(workspace_id, "flags", flag_key)
        if version is None:
            raise FlagNotFoundError(flag_key)
        return version

    async def flags_version(self, workspace_id: str) -> int:
        """Counter bumped by every flag write of the workspace (0 before the first)."""
        return await self._version(validate_workspace_id(workspace_id), "flags")

    # -- backend primitives ----------------------------------------------------------
    @abc.abstractmethod
    async def _read(self, workspace_id: str, kind: Kind) -> tuple[int, Documents]:
        """Version and documents of one collection, as one consistent snapshot."""

    @abc.abstractmethod
    async def _put(
        self, workspace_id: str, kind: Kind, doc_id: str, doc: str, max_docs: int
    ) -> int | None:
        """Upsert and bump the version atomically; ``None`` (nothing written) when the
        id is new and the collection already holds ``max_docs`` documents."""

    @abc.abstractmethod
    async def _delete(self, workspace_id: str, kind: Kind, doc_id: str) -> int | None:
        """Delete and bump the version atomically; ``None`` when there was no such id."""

    @abc.abstractmethod
    async def _version(self, workspace_id: str, kind: Kind) -> int:
        """The collection's version counter (0 when never written)."""


def _encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _check_description(description: object) -> None:
    if not isinstance(description, str):
        raise ValidationError("description", "must be a string")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValidationError("description", f"must be at most {MAX_DESCRIPTION_CHARS} characters")


def create_policy_store(store: Store) -> PolicyStore:
    """The policy store on the same backend (and connection) as ``store``."""
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

    if isinstance(store, RedisStore):
        from aragora.policy.redis_store import RedisPolicyStore

        return RedisPolicyStore(store)
    if isinstance(store, SqliteStore):
        from aragora.policy.sqlite_store import SqlitePolicyStore

        return SqlitePolicyStore(store)
    raise TypeError(f"no policy store for {type(store).__name__}")
