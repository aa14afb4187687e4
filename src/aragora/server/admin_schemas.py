"""Request and response models of the administration API: workspaces, tokens, access
rules, feature flags, spend and the audit trail.

As in :mod:`aragora.server.schemas`, requests are strict and forbid unknown fields; the
libraries behind the handlers (tenancy, policy, audit) validate again and their
``ValidationError`` reaches the client as the same 422 problem.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from aragora.policy.cedar import MAX_RULE_TEXT_CHARS
from aragora.policy.store import MAX_DESCRIPTION_CHARS
from aragora.server.schemas import Cost, IntegralValue, JsonValue
from aragora.tenancy.quotas import MAX_QUOTA_VALUE

WORKSPACE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
MAX_WORKSPACE_LENGTH: Final = 64
DOCUMENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
"""Rule ids and flag keys (as :func:`aragora.policy.store.validate_document_id`)."""
MAX_DOCUMENT_ID_LENGTH: Final = 64
TOKEN_ID_PATTERN: Final = r"^tok_[0-9A-Za-z_]+$"
MAX_TOKEN_ID_LENGTH: Final = 68
MAX_PLAN_LENGTH: Final = 64
MAX_TOKEN_LIFETIME_S: Final = 10 * 366 * 86_400.0
MAX_VARIANTS: Final = 100
MAX_VARIANT_NAME_LENGTH: Final = 64

RoleName = Literal["admin", "operator", "submitter", "agent", "viewer"]
PeriodName = Literal["daily", "monthly"]

WorkspaceName = Annotated[
    str, Field(min_length=1, max_length=MAX_WORKSPACE_LENGTH, pattern=WORKSPACE_PATTERN)
]
PlanName = Annotated[str, Field(min_length=1, max_length=MAX_PLAN_LENGTH)]
QuotaValue = Annotated[int | None, Field(ge=0, le=MAX_QUOTA_VALUE), IntegralValue]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- workspaces -----------------------------------------------------------------------


class QuotasIn(_Request):
    """Quota overrides over the plan: a number, or ``null`` for unlimited. Fields left
    out keep their current value (the plan's, unless overridden before)."""

    max_agents: QuotaValue = None
    max_pending_tasks: QuotaValue = None
    max_running_tasks: QuotaValue = None
    max_payload_bytes: QuotaValue = None
    max_submits_per_minute: QuotaValue = None

    def overrides(self) -> dict[str, int | None]:
        """Only the fields the request set (``null`` included)."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class BudgetIn(_Request):
    """At most ``limit`` cost per UTC day or month; an alert once ``soft_ratio`` of it
    is spent or reserved."""

    limit: Cost
    period: PeriodName = "monthly"
    soft_ratio: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.8


class CreateWorkspaceRequest(_Request):
    """A new workspace (tenant) with a plan, optional quota overrides and budget."""

    name: WorkspaceName
    plan: PlanName = "standard"
    quotas: QuotasIn | None = None
    budget: BudgetIn | None = None


class UpdateWorkspaceRequest(_Request):
    """Change the plan, override quotas (merged into earlier overrides), or set the
    budget (``"budget": null`` removes it). Fields left out change nothing."""

    plan: PlanName | None = None
    quotas: QuotasIn | None = None
    budget: BudgetIn | None = None


class QuotasOut(_Response):
    """Effective quotas (plan and overrides); ``null`` is unlimited."""

    max_agents: int | None
    max_pending_tasks: int | None
    max_running_tasks: int | None
    max_payload_bytes: int | None
    max_submits_per_minute: int | None


class BudgetOut(_Response):
    limit: float
    period: PeriodName
    soft_ratio: float


class WorkspaceOut(_Response):
    """A workspace: its plan, effective quotas, the overrides set over the plan, and
    its budget (``null``: none)."""

    name: str
    plan: str
    quotas: QuotasOut
    quota_overrides: dict[str, int | None]
    created_at: float
    budget: BudgetOut | None


class WorkspaceListOut(_Response):
    workspaces: list[WorkspaceOut]


# -- tokens ---------------------------------------------------------------------------


class IssueTokenRequest(_Request):
    """A new API token of ``workspace`` (default: the caller's) with ``role``, expiring
    ``expires_in_s`` seconds from now (``null``: never)."""

    workspace: WorkspaceName | None = None
    role: RoleName
    expires_in_s: Annotated[
        float | None, Field(gt=0, le=MAX_TOKEN_LIFETIME_S, allow_inf_nan=False)
    ] = None


class IssuedTokenOut(_Response):
    """The new token: ``token`` is its secret, shown this once and never stored."""

    token_id: str
    token: str
    workspace: str
    role: RoleName
    expires_at: float | None


class TokenOut(_Response):
    """A token as it may be listed: never its secret, never its hash."""

    token_id: str
    workspace: str
    role: RoleName
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    created_by: str | None


class TokenListOut(_Response):
    tokens: list[TokenOut]


# -- access rules -----------------------------------------------------------------------


class PutRuleRequest(_Request):
    """Cedar text (usually ``forbid`` statements) narrowing the role grants; see
    :mod:`aragora.policy.cedar` for the attributes a rule can test."""

    text: Annotated[str, Field(min_length=1, max_length=MAX_RULE_TEXT_CHARS)]
    description: Description = ""


class RuleOut(_Response):
    rule_id: str
    text: str
    description: str
    updated_at: float


class PutRuleOut(RuleOut):
    """The rule as stored, and the workspace's rules version after the write."""

    version: int


class RuleListOut(_Response):
    """The workspace's rules version (bumped by every write) and its rules by id."""

    version: int
    rules: list[RuleOut]


# -- feature flags ----------------------------------------------------------------------


def _check_rollout(value: list[list[str | int]]) -> list[list[str | int]]:
    for item in value:
        if len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], int):
            raise ValueError("each slice must be [variant name, whole percent]")
    return value


RolloutSlices = Annotated[
    list[list[Annotated[str | int, IntegralValue]]],
    Field(max_length=MAX_VARIANTS),
    AfterValidator(_check_rollout),
]


class PutFlagRequest(_Request):
    """A flag serving one of its ``variants``: ``default_variant`` to everyone, or split
    by ``rollout`` percentages (adding up to 100) over targeting keys."""

    variants: Annotated[dict[str, JsonValue], Field(min_length=1, max_length=MAX_VARIANTS)]
    default_variant: Annotated[str, Field(min_length=1, max_length=MAX_VARIANT_NAME_LENGTH)]
    rollout: RolloutSlices = []
    enabled: bool = True
    description: Description = ""


class FlagOut(_Response):
    """A flag; ``kind`` is the type of its variant values."""

    key: str
    variants: dict[str, Any]
    default_variant: str
    rollout: list[tuple[str, int]]
    enabled: bool
    description: str
    kind: Literal["boolean", "string", "integer", "float", "object"]


class FlagListOut(_Response):
    version: int
    flags: list[FlagOut]


class FlagEvaluationOut(_Response):
    """What the flag serves to the targeting key; ``variant`` and ``value`` are ``null``
    when the flag is disabled (reason ``DISABLED``)."""

    key: str
    value: Any
    variant: str | None
    reason: Literal["STATIC", "SPLIT", "DEFAULT", "DISABLED"]


# -- spend and audit ----------------------------------------------------------------------


class LimitsOut(_Response):
    """The limits the store enforces for the workspace (``null``: unlimited)."""

    max_agents: int | None
    max_pending_tasks: int | None
    max_running_tasks: int | None
    max_payload_bytes: int | None
    budget: float | None
    budget_period: PeriodName
    budget_soft_ratio: float


class SpendOut(_Response):
    """Reserved and spent cost of the current budget period, by task type and model."""

    period: str
    budget: float | None
    reserved: float
    spent: float
    by_task_type: dict[str, float]
    by_model: dict[str, float]
    limits: LimitsOut


class AuditEventOut(_Response):
    """One event of the workspace's hash-chained audit trail."""

    seq: int
    time_ms: int
    workspace_id: str
    principal: str
    action: str
    resource: str
    outcome: Literal["allowed", "denied", "error"]
    correlation_id: str | None
    client_address: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPageOut(_Response):
    """Events oldest first; pass ``next_after_seq`` as ``after_seq`` for the next page
    (``null``: this page reached the end of the chain)."""

    events: list[AuditEventOut]
    next_after_seq: int | None


class AuditVerifyOut(_Response):
    """The check of the whole chain: ``first_broken_seq`` is the first event missing,
    altered or out of place. Keep ``head_seq`` and ``head_hash`` elsewhere to detect a
    later rewrite of the whole chain."""

    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str | None
    head_seq: int
    head_hash: str
