"""Who is calling and what they may do: roles, principals, workspaces and their quotas.

Shared vocabulary of tenancy, policy, audit and the HTTP layer. A token belongs to one
workspace and carries one role; every operation acts in the principal's workspace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Built-in roles, from most to least powerful."""

    ADMIN = "admin"  # manage the workspace, its tokens, policies and flags
    OPERATOR = "operator"  # everything on tasks and agents
    SUBMITTER = "submitter"  # submit, read and cancel tasks
    AGENT = "agent"  # register itself, heartbeat, claim, complete, fail
    VIEWER = "viewer"  # read only


class Action(StrEnum):
    """Operations that access rules, quotas and the audit trail speak about."""

    AGENT_REGISTER = "agent.register"
    AGENT_HEARTBEAT = "agent.heartbeat"
    AGENT_DEREGISTER = "agent.deregister"
    AGENT_READ = "agent.read"
    TASK_SUBMIT = "task.submit"
    TASK_READ = "task.read"
    TASK_CANCEL = "task.cancel"
    TASK_RETRY = "task.retry"
    TASK_CLAIM = "task.claim"
    TASK_COMPLETE = "task.complete"
    TASK_FAIL = "task.fail"
    HEALTH_READ = "health.read"
    WORKSPACE_READ = "workspace.read"
    WORKSPACE_MANAGE = "workspace.manage"
    TOKEN_MANAGE = "token.manage"
    POLICY_MANAGE = "policy.manage"
    AUDIT_READ = "audit.read"


_READ = frozenset({Action.AGENT_READ, Action.TASK_READ, Action.HEALTH_READ})
_AGENT = _READ | {
    Action.AGENT_REGISTER,
    Action.AGENT_HEARTBEAT,
    Action.AGENT_DEREGISTER,
    Action.TASK_CLAIM,
    Action.TASK_COMPLETE,
    Action.TASK_FAIL,
}
_SUBMITTER = _READ | {Action.TASK_SUBMIT, Action.TASK_CANCEL}
_OPERATOR = _AGENT | _SUBMITTER | {Action.TASK_RETRY, Action.WORKSPACE_READ}

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: _READ,
    Role.AGENT: frozenset(_AGENT),
    Role.SUBMITTER: frozenset(_SUBMITTER),
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(Action),
}


def role_allows(role: Role, action: Action) -> bool:
    """The built-in grant of a role, before workspace rules narrow it."""
    return action in ROLE_ACTIONS[role]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: one token of one workspace with one role."""

    workspace_id: str
    role: Role
    token_id: str

    @property
    def subject(self) -> str:
        return f"token:{self.token_id}"


@dataclass(frozen=True, slots=True)
class WorkspaceQuotas:
    """Plan limits of a workspace; ``None`` means unlimited."""

    max_agents: int | None = 100
    max_pending_tasks: int | None = 100_000
    max_running_tasks: int | None = 1_000
    max_payload_bytes: int | None = 1_048_576
    max_submits_per_minute: int | None = 6_000


PLANS: dict[str, WorkspaceQuotas] = {
    "free": WorkspaceQuotas(
        max_agents=5,
        max_pending_tasks=1_000,
        max_running_tasks=10,
        max_payload_bytes=65_536,
        max_submits_per_minute=600,
    ),
    "standard": WorkspaceQuotas(),
    "unlimited": WorkspaceQuotas(None, None, None, None, None),
}


@dataclass(frozen=True, slots=True)
class Workspace:
    """A tenant: its name (also its id), plan and quota overrides."""

    name: str
    plan: str = "standard"
    quotas: WorkspaceQuotas = field(default_factory=WorkspaceQuotas)
    created_at: float = 0.0
    quota_overrides: tuple[tuple[str, int | None], ...] = ()
    """The ``(quota field, value)`` pairs set over the plan, sorted by field; ``quotas``
    already includes them. Kept apart so a change of plan keeps them."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An API token as it may be shown: never its secret, never its hash.

    Times are epoch seconds on the store clock; ``expires_at`` ``None`` means never.
    """

    token_id: str
    workspace_id: str
    role: Role
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    created_by: str | None = None

    def is_active(self, now: float) -> bool:
        """Not revoked and not expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def principal(self) -> Principal:
        """The caller this token authenticates."""
        return Principal(self.workspace_id, self.role, self.token_id)
