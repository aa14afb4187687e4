"""Feature flags of a workspace: the stored ``Flag`` and how it is evaluated.

A flag has named variants (``{"on": True, "off": False}``, ``{"a": "blue", "b": "green"}``)
and serves one of them:

* disabled: nothing (callers get their own default; OpenFeature reason ``DISABLED``);
* no rollout: ``default_variant`` to everyone (reason ``STATIC``);
* a percentage rollout ``(("on", 20), ("off", 80))``: the variant whose slice holds
  the targeting key's bucket (reason ``SPLIT``). Without a targeting key the
  ``default_variant`` is served (reason ``DEFAULT``).

The bucket is ``sha256("<flag key>/<targeting key>") mod 100``: stable for a key across
processes and releases, independent between flags, and uniform, so a 20 % rollout
reaches about 20 % of keys and raising it to 30 % keeps the first 20 % in.

Flags are stored per workspace by ``PolicyStore`` (``get_flags``, ``put_flag``,
``delete_flag``, ``flags_version``); ``FlagStore`` is that part of its interface.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aragora.control_plane.errors import ValidationError

ValueKind = Literal["boolean", "string", "integer", "float", "object"]
ResolutionReason = Literal["STATIC", "SPLIT", "DEFAULT", "DISABLED"]
BUCKETS = 100


def rollout_bucket(flag_key: str, targeting_key: str) -> int:
    """The stable bucket 0..99 of a targeting key for one flag."""
    digest = hashlib.sha256(f"{flag_key}/{targeting_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def value_kind(value: object) -> ValueKind:
    """The OpenFeature type a variant value belongs to; anything else is rejected."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float) and math.isfinite(value):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict | list):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            pass
        else:
            return "object"
    raise ValidationError(
        "variants", f"value {value!r} is not a JSON boolean, string, number or object"
    )


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a flag serves to one targeting key; ``variant`` is None when disabled."""

    variant: str | None
    value: Any
    reason: ResolutionReason


@dataclass(frozen=True, slots=True)
class Flag:
    """One feature flag; construction validates it (``ValidationError`` names the field)."""

    key: str
    variants: Mapping[str, Any]
    default_variant: str
    rollout: tuple[tuple[str, int], ...] = ()
    enabled: bool = True
    description: str = ""
    kind: ValueKind = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.variants, Mapping) or not self.variants:
            raise ValidationError("variants", "must map at least one variant name to a value")
        variants = dict(self.variants)
        kinds = {value_kind(v) for v in variants.values()}
        if len(kinds) != 1 or not all(isinstance(name, str) and name for name in variants):
            raise ValidationError("variants", "names must be non-empty strings, values of one type")
        if self.default_variant not in variants:
            raise ValidationError("default_variant", "must name one of the variants")
        rollout = tuple((str(v), p) for v, p in self.rollout)
        for variant, percent in rollout:
            if variant not in variants:
                raise ValidationError("rollout", f"names unknown variant {variant!r}")
            if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
                raise ValidationError("rollout", "percentages must be integers from 0 to 100")
        if rollout and sum(p for _, p in rollout) != BUCKETS:
            raise ValidationError("rollout", "percentages must add up to 100")
        if not isinstance(self.enabled, bool):
            raise ValidationError("enabled", "must be a boolean")
        if not isinstance(self.description, str) or len(self.description) > 1_000:
            raise ValidationError("description", "must be a string of at most 1000 characters")
        object.__setattr__(self, "variants", variants)
        object.__setattr__(self, "rollout", rollout)
        object.__setattr__(self, "kind", kinds.pop())

    @classmethod
    def boolean(
        cls, key: str, *, percent_on: int = 100, enabled: bool = True, description: str = ""
    ) -> Flag:
        """An on/off flag, on for ``percent_on`` % of targeting keys (off without a key
        unless ``percent_on`` is 100)."""
        variants = {"on": True, "off": False}
        if percent_on == BUCKETS:
            return cls(key, variants, "on", enabled=enabled, description=description)
        rollout = (("on", percent_on), ("off", BUCKETS - percent_on))
        return cls(key, variants, "off", rollout, enabled, description)

    def evaluate(self, targeting_key: str | None) -> Resolution:
        """The variant served to ``targeting_key`` (see the module docstring)."""
        if not self.enabled:
            return Resolution(None, None, "DISABLED")
        if not self.rollout:
            return Resolution(self.default_variant, self.variants[self.default_variant], "STATIC")
        if not targeting_key:
            return Resolution(self.default_variant, self.variants[self.default_variant], "DEFAULT")
        bucket = rollout_bucket(self.key, targeting_key)
        upper = 0
        for variant, percent in self.rollout:
            upper += percent
            if bucket < upper:
                return Resolution(variant, self.variants[variant], "SPLIT")
        raise AssertionError("rollout percentages add up to 100")  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        """The stored document (the key is the document id)."""
        return {
            "variants": dict(self.variants),
            "default_variant": self.default_variant,
            "rollout": [list(slice_) for slice_ in self.rollout],
            "enabled": self.enabled,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, key: str, body: Mapping[str, Any]) -> Flag:
        """Rebuild a flag from ``to_dict`` output (validating it again)."""
        rollout: Sequence[Sequence[Any]] = body.get("rollout", [])
        return cls(
            key,
            body["variants"],
            body["default_variant"],
            tuple((str(v), int(p)) for v, p in rollout),
            bool(body.get("enabled", True)),
            str(body.get("description", "")),
        )


class FlagStore(Protocol):
    """Where flags are read from: the flag part of ``PolicyStore``."""

    async def get_flags(self, workspace_id: str) -> tuple[int, list[Flag]]: ...

    async def flags_version(self, workspace_id: str) -> int: ...
