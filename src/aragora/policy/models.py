"""Value objects of the policy package: stored rules and access decisions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    """One access rule of a workspace: Cedar policy text narrowing the role grants.

    ``text`` holds one or more Cedar statements (usually ``forbid``); ``updated_at`` is
    the store-clock time in seconds of the last write.
    """

    rule_id: str
    text: str
    description: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this principal do this": ``reason`` says why, for humans and logs.

    ``rule_ids`` lists the workspace rules that denied the request (empty when the
    role grant decided, or when allowed).
    """

    allowed: bool
    reason: str
    rule_ids: tuple[str, ...] = ()
