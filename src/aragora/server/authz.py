"""Authorization of every route: one table from route to :class:`Action`, enforced
through the workspace's :class:`~aragora.policy.engine.PolicyEngine`.

:data:`ROUTE_ACCESS` maps ``(method, path template)`` of every route the app serves to
what it needs. The routers of the API depend on :func:`authorize_route`, which looks the
matched route up and

* refuses a route missing from the table (a bug: the test suite iterates ``app.routes``
  and fails on any route without an entry);
* refuses roles the entry leaves out (``roles``) and roles without the action's grant
  (``aragora.tenancy.models.ROLE_ACTIONS``), before the body is validated;
* for most routes asks the policy engine at once, with no request attributes;
* for routes marked ``context`` leaves a :class:`Guard` to the handler, which calls
  :meth:`Guard.check` with the request's attributes (task type, priority, payload size,
  required and agent capabilities) once the body is validated, before acting.

Refusals raise :class:`~aragora.server.errors.ForbiddenError`: 403 problem+json of type
``urn:aragora:problem:forbidden`` carrying the decision's reason and rule ids.

Workspace rules are Cedar ``forbid`` statements over those attributes (see
:mod:`aragora.policy.cedar`). Routing by task type is a rule on submit: a task reaches
only agents that hold all of its required capabilities, so

    forbid(principal, action == Action::"task.submit", resource)
    when { context.task_type == "execute" && !context.required_capabilities.contains("code") };

means "only agents with the capability ``code`` may run tasks of type ``execute``".

Agent tokens (role ``agent``) act only as the agents they registered:
:func:`claim_agent` on register, :func:`ensure_acts_as_agent` on heartbeat, deregister
and claim. Operators and admins act as any agent of their workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Final

from fastapi import Depends
from starlette.requests import Request

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.policy.engine import PolicyEngine
from aragora.server.errors import ForbiddenError
from aragora.server.middleware.tenancy import current_principal
from aragora.server.services import Services, get_services
from aragora.tenancy.models import Action, Principal, Role, role_allows
from aragora.tenancy.service import DEFAULT_WORKSPACE

API_PREFIX: Final = "/api/control-plane"


@dataclass(frozen=True, slots=True)
class RouteAccess:
    """What one route needs.

    ``action`` is what the policy engine is asked about (``None``: an open route, served
    without a token). ``context``: the handler adds request attributes and calls
    :meth:`Guard.check` itself. ``roles``: only these roles, even where the action's
    grant is wider (for routes that have no action of their own yet). ``workspaces``:
    only principals of these workspaces (deployment-wide routes such as ``/metrics``).
    """

    action: Action | None
    context: bool = False
    roles: frozenset[Role] | None = None
    workspaces: frozenset[str] | None = None

    @property
    def is_open(self) -> bool:
        return self.action is None


OPEN: Final = RouteAccess(None)
_READERS_OF_SPEND: Final = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})
DEPLOYMENT_OPERATORS: Final = RouteAccess(
    Action.WORKSPACE_MANAGE,
    roles=frozenset({Role.ADMIN}),
    workspaces=frozenset({DEFAULT_WORKSPACE}),
)
"""Admins of workspace ``default``: what the deployment-wide routes need."""

_P = API_PREFIX
ROUTE_ACCESS: Final[Mapping[tuple[str, str], RouteAccess]] = MappingProxyType(
    {
        # probes and the API description
        ("GET", "/livez"): OPEN,
        ("GET", "/readyz"): OPEN,
        ("GET", "/openapi.json"): OPEN,
        ("GET", "/docs"): OPEN,
        # agents
        ("POST", f"{_P}/agents/register"): RouteAccess(Action.AGENT_REGISTER, context=True),
        ("GET", f"{_P}/agents"): RouteAccess(Action.AGENT_READ),
        ("GET", f"{_P}/agents/{{agent_id}}"): RouteAccess(Action.AGENT_READ),
        ("GET", f"{_P}/agents/{{agent_id}}/health"): RouteAccess(Action.AGENT_READ),
        ("POST", f"{_P}/agents/{{agent_id}}/heartbeat"): RouteAccess(Action.AGENT_HEARTBEAT),
        ("DELETE", f"{_P}/agents/{{agent_id}}"): RouteAccess(Action.AGENT_DEREGISTER),
        # tasks
        ("POST", f"{_P}/tasks/submit"): RouteAccess(Action.TASK_SUBMIT, context=True),
        ("POST", f"{_P}/tasks/claim"): RouteAccess(Action.TASK_CLAIM, context=True),
        ("GET", f"{_P}/tasks"): RouteAccess(Action.TASK_READ),
        ("GET", f"{_P}/tasks/{{task_id}}"): RouteAccess(Action.TASK_READ),
        ("POST", f"{_P}/tasks/{{task_id}}/complete"): RouteAccess(Action.TASK_COMPLETE),
        ("POST", f"{_P}/tasks/{{task_id}}/fail"): RouteAccess(Action.TASK_FAIL),
        ("POST", f"{_P}/tasks/{{task_id}}/cancel"): RouteAccess(Action.TASK_CANCEL),
        ("POST", f"{_P}/tasks/{{task_id}}/retry"): RouteAccess(Action.TASK_RETRY),
        ("POST", f"{_P}/tasks/claim-batch"): RouteAccess(Action.TASK_CLAIM, context=True),
        ("POST", f"{_P}/tasks/complete-batch"): RouteAccess(Action.TASK_COMPLETE),
        ("POST", f"{_P}/tasks/fail-batch"): RouteAccess(Action.TASK_FAIL),
        # health and metrics (metrics label every workspace: deployment operators only)
        ("GET", f"{_P}/health"): RouteAccess(Action.HEALTH_READ),
        ("GET", "/metrics"): DEPLOYMENT_OPERATORS,
        # workspaces (creating one also needs an admin of workspace "default")
        ("POST", f"{_P}/workspaces"): RouteAccess(Action.WORKSPACE_MANAGE),
        ("GET", f"{_P}/workspaces"): RouteAccess(Action.WORKSPACE_READ),
        ("GET", f"{_P}/workspaces/{{name}}"): RouteAccess(Action.WORKSPACE_READ),
        ("PATCH", f"{_P}/workspaces/{{name}}"): RouteAccess(Action.WORKSPACE_MANAGE),
        # tokens
        ("POST", f"{_P}/tokens"): RouteAccess(Action.TOKEN_MANAGE),
        ("GET", f"{_P}/tokens"): RouteAccess(Action.TOKEN_MANAGE),
        ("DELETE", f"{_P}/tokens/{{token_id}}"): RouteAccess(Action.TOKEN_MANAGE),
        # access rules
        ("GET", f"{_P}/policies"): RouteAccess(Action.POLICY_MANAGE),
        ("PUT", f"{_P}/policies/{{rule_id}}"): RouteAccess(Action.POLICY_MANAGE),
        ("DELETE", f"{_P}/policies/{{rule_id}}"): RouteAccess(Action.POLICY_MANAGE),
        # feature flags: managed with the policies; evaluated by every role (each holds
        # task.read; there is no flag action yet)
        ("GET", f"{_P}/flags"): RouteAccess(Action.POLICY_MANAGE),
        ("PUT", f"{_P}/flags/{{key}}"): RouteAccess(Action.POLICY_MANAGE),
        ("DELETE", f"{_P}/flags/{{key}}"): RouteAccess(Action.POLICY_MANAGE),
        ("GET", f"{_P}/flags/{{key}}/evaluate"): RouteAccess(Action.TASK_READ),
        # spend: operators, admins and viewers (there is no budget action yet)
        ("GET", f"{_P}/budget"): RouteAccess(Action.TASK_READ, roles=_READERS_OF_SPEND),
        # audit trail
        ("GET", f"{_P}/audit"): RouteAccess(Action.AUDIT_READ),
        ("GET", f"{_P}/audit/verify"): RouteAccess(Action.AUDIT_READ),
        # the dashboard: who is calling, and the live feed of the workspace (its agents
        # and health sections need agent.read and health.read; see handlers/dashboard.py)
        ("GET", f"{_P}/whoami"): RouteAccess(Action.TASK_READ),
        ("GET", f"{_P}/events"): RouteAccess(Action.TASK_READ),
    }
)
"""Every route of the app and what it needs; see the module docstring."""


def route_access(method: str, path: str) -> RouteAccess | None:
    """The table entry of a route (``HEAD`` counts as ``GET``), or ``None``."""
    key_method = "GET" if method.upper() == "HEAD" else method.upper()
    return ROUTE_ACCESS.get((key_method, path))


@dataclass(frozen=True, slots=True)
class Guard:
    """The authorization of one request, bound to its principal and action."""

    policy: PolicyEngine
    principal: Principal
    action: Action

    async def check(self, **attributes: object) -> None:
        """Ask the policy engine with these request attributes; ForbiddenError if denied.

        Attributes are those of :data:`aragora.policy.cedar.REQUEST_ATTRIBUTES`.
        """
        decision = await self.policy.authorize(self.principal, self.action, attributes or None)
        if not decision.allowed:
            raise ForbiddenError(decision.reason, decision.rule_ids)


async def authorize_route(request: Request) -> Guard:
    """Router dependency: authorize the matched route from :data:`ROUTE_ACCESS`.

    Returns the request's :class:`Guard`; a handler of a ``context`` route declares it
    as a parameter (the same instance: FastAPI runs a dependency once per request) and
    must call :meth:`Guard.check` before acting.
    """
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    access = route_access(request.method, path) if isinstance(path, str) else None
    if access is None or access.action is None:
        raise RuntimeError(f"route {request.method} {path} has no authorization entry")
    principal = await current_principal(request)
    services: Services = await get_services(request)
    role, action = principal.role, access.action
    if access.roles is not None and role not in access.roles:
        raise ForbiddenError(f"role {role.value} may not use this route")
    if access.workspaces is not None and principal.workspace_id not in access.workspaces:
        raise ForbiddenError("only principals of workspace default may use this route")
    if not role_allows(role, action):
        raise ForbiddenError(f"role {role.value} lacks {action.value}")
    guard = Guard(services.policy, principal, action)
    if not access.context:
        await guard.check()
    return guard


RouteGuard = Annotated[Guard, Depends(authorize_route)]
"""A handler parameter giving the request's :class:`Guard` (see :func:`authorize_route`)."""


async def claim_agent(services: Services, principal: Principal, agent_id: str) -> None:
    """On register: an agent token becomes the agent's owner, unless another active
    token owns it (ForbiddenError). Other roles register any agent without owning it."""
    if principal.role is not Role.AGENT:
        return
    store = services.tenancy.store
    if not await store.claim_agent_owner(principal.workspace_id, agent_id, principal.token_id):
        raise ForbiddenError(
            f"agent {agent_id!r} was registered by another token; "
            "an agent token acts only as the agents it registered"
        )


async def ensure_acts_as_agent(
    services: Services, cp: ControlPlaneCoordinator, principal: Principal, agent_id: str
) -> None:
    """An agent token may act only as an agent it owns: 404 when the agent does not
    exist, 403 (ForbiddenError) when another token (or none) owns it. Other roles pass."""
    if principal.role is not Role.AGENT:
        return
    workspace_id = principal.workspace_id
    owner = await services.tenancy.store.agent_owner(workspace_id, agent_id)
    if owner == principal.token_id:
        return
    await cp.get_agent(agent_id, workspace_id=workspace_id)  # AgentNotFoundError: 404
    raise ForbiddenError(
        f"agent {agent_id!r} was not registered by this token; "
        "an agent token acts only as the agents it registered"
    )
