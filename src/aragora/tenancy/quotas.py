"""Plans and quota overrides: validation, and the effective quotas of a workspace.

A workspace has a plan (a key of :data:`~aragora.tenancy.models.PLANS`) and may
override single quotas of it. Overrides are stored apart from the plan so a change of
plan keeps them; the effective quotas are the plan's with the overrides applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from aragora.control_plane.errors import ValidationError
from aragora.control_plane.models import validate_workspace_id
from aragora.tenancy.models import PLANS, Workspace, WorkspaceQuotas

QuotaOverrides = Mapping[str, int | None]
"""Quota field name (of :class:`WorkspaceQuotas`) to its value; ``None`` means unlimited."""

QUOTA_FIELDS: Final = tuple(f.name for f in dataclasses.fields(WorkspaceQuotas))
MAX_QUOTA_VALUE: Final = 2**53 - 1
"""Largest quota value accepted: exact in JSON and in Lua numbers everywhere."""


def validate_name(name: object) -> str:
    """A workspace name: the rules of workspace ids, reported on the field ``name``."""
    if not isinstance(name, str):
        raise ValidationError("name", "must be a string")
    try:
        validate_workspace_id(name)
    except ValidationError as exc:
        raise ValidationError("name", exc.reason) from None
    if "\n" in name:  # the shared pattern ends in "$", which lets a final newline through
        raise ValidationError("name", "must not contain a newline")
    return name


def validate_plan(plan: object) -> str:
    """One of the names in :data:`PLANS`."""
    if not isinstance(plan, str) or plan not in PLANS:
        raise ValidationError("plan", f"must be one of {', '.join(sorted(PLANS))}")
    return plan


def validate_quota_overrides(overrides: QuotaOverrides | None) -> dict[str, int | None]:
    """Check field names and values (``None`` or a whole number 0..2**53-1); a new dict."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ValidationError("quota_overrides", "must be a mapping of quota name to value")
    checked: dict[str, int | None] = {}
    for name, value in overrides.items():
        if name not in QUOTA_FIELDS:
            raise ValidationError(
                "quota_overrides", f"unknown quota {name!r}; known: {', '.join(QUOTA_FIELDS)}"
            )
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_QUOTA_VALUE
        ):
            raise ValidationError(
                f"quota_overrides.{name}",
                f"must be null (unlimited) or a whole number from 0 to {MAX_QUOTA_VALUE}",
            )
        checked[name] = value
    return checked


def effective_quotas(plan: str, overrides: QuotaOverrides) -> WorkspaceQuotas:
    """The plan's quotas with the overrides applied (an unknown plan counts as the
    default quotas, so a plan removed from the code does not break stored workspaces)."""
    base = PLANS.get(plan, WorkspaceQuotas())
    return dataclasses.replace(base, **dict(overrides))


def build_workspace(
    name: str, plan: str, overrides: QuotaOverrides, created_at: float
) -> Workspace:
    """The :class:`Workspace` value of a stored record."""
    return Workspace(
        name=name,
        plan=plan,
        quotas=effective_quotas(plan, overrides),
        created_at=created_at,
        quota_overrides=tuple(sorted(overrides.items())),
    )
