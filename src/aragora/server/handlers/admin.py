"""Workspaces and API tokens under ``/api/control-plane``.

Who may reach what, beyond the route's action (:data:`aragora.server.authz.ROUTE_ACCESS`):

* an admin of workspace ``default`` (the deployment's administrator) may create
  workspaces and reach every workspace and every token;
* everyone else reaches only their own workspace and its tokens: another workspace's
  name or token id is answered 404, exactly as one that does not exist.

Quota changes made here are pushed to the store at once
(:func:`aragora.server.quotas.push_limits`), so the limits apply to the next request on
every instance; submit rate limits within about a second.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.models import BudgetPeriod, WorkspaceLimits
from aragora.server.admin_schemas import (
    MAX_TOKEN_ID_LENGTH,
    MAX_WORKSPACE_LENGTH,
    TOKEN_ID_PATTERN,
    WORKSPACE_PATTERN,
    BudgetIn,
    CreateWorkspaceRequest,
    IssuedTokenOut,
    IssueTokenRequest,
    TokenListOut,
    UpdateWorkspaceRequest,
    WorkspaceListOut,
    WorkspaceOut,
)
from aragora.server.authz import API_PREFIX, authorize_route
from aragora.server.context import set_audit_resource
from aragora.server.errors import ForbiddenError
from aragora.server.handlers.responses import BODY_PROBLEMS, problem_responses
from aragora.server.middleware.tenancy import current_principal
from aragora.server.quotas import KEEP, Budget, budget_of, push_limits
from aragora.server.rendering import SafeJSONResponse
from aragora.server.services import Services, get_services
from aragora.server.state import get_coordinator
from aragora.tenancy.errors import TokenNotFoundError, WorkspaceNotFoundError
from aragora.tenancy.models import Principal, Role, TokenInfo, Workspace
from aragora.tenancy.service import DEFAULT_WORKSPACE

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize_route)])

Coordinator = Annotated[ControlPlaneCoordinator, Depends(get_coordinator)]
Caller = Annotated[Principal, Depends(current_principal)]
Svc = Annotated[Services, Depends(get_services)]
WorkspacePath = Annotated[
    str, Path(min_length=1, max_length=MAX_WORKSPACE_LENGTH, pattern=WORKSPACE_PATTERN)
]
WorkspaceQuery = Annotated[
    str | None, Query(min_length=1, max_length=MAX_WORKSPACE_LENGTH, pattern=WORKSPACE_PATTERN)
]
TokenIdPath = Annotated[
    str, Path(min_length=5, max_length=MAX_TOKEN_ID_LENGTH, pattern=TOKEN_ID_PATTERN)
]


def is_deployment_admin(principal: Principal) -> bool:
    """An admin of workspace ``default``: may manage every workspace."""
    return principal.role is Role.ADMIN and principal.workspace_id == DEFAULT_WORKSPACE


def ensure_reachable(principal: Principal, workspace: str) -> None:
    """Another workspace than the caller's is "not found" unless the caller is a
    deployment admin (:func:`is_deployment_admin`)."""
    if workspace != principal.workspace_id and not is_deployment_admin(principal):
        raise WorkspaceNotFoundError(workspace)


def _budget(body: BudgetIn | None) -> Budget | None:
    if body is None:
        return None
    return Budget(body.limit, BudgetPeriod(body.period), body.soft_ratio)


def workspace_to_dict(workspace: Workspace, limits: WorkspaceLimits) -> dict[str, Any]:
    """The JSON of :class:`WorkspaceOut`."""
    quotas = workspace.quotas
    budget = budget_of(limits)
    budget_out = (
        None
        if budget is None
        else {"limit": budget.limit, "period": budget.period.value, "soft_ratio": budget.soft_ratio}
    )
    return {
        "name": workspace.name,
        "plan": workspace.plan,
        "quotas": {
            "max_agents": quotas.max_agents,
            "max_pending_tasks": quotas.max_pending_tasks,
            "max_running_tasks": quotas.max_running_tasks,
            "max_payload_bytes": quotas.max_payload_bytes,
            "max_submits_per_minute": quotas.max_submits_per_minute,
        },
        "quota_overrides": dict(workspace.quota_overrides),
        "created_at": workspace.created_at,
        "budget": budget_out,
    }


def token_to_dict(info: TokenInfo) -> dict[str, Any]:
    """The JSON of :class:`TokenOut`: never the secret, never its hash."""
    return {
        "token_id": info.token_id,
        "workspace": info.workspace_id,
        "role": info.role.value,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "revoked_at": info.revoked_at,
        "created_by": info.created_by,
    }


# -- workspaces -------------------------------------------------------------------------


@router.post(
    "/workspaces",
    status_code=201,
    response_model=WorkspaceOut,
    tags=["workspaces"],
    operation_id="createWorkspace",
    responses=problem_responses(409, *BODY_PROBLEMS),
)
async def create_workspace(
    body: CreateWorkspaceRequest, request: Request, cp: Coordinator, services: Svc, caller: Caller
) -> Response:
    """Create a workspace (admins of workspace ``default`` only); its limits apply at once.

    409 when the name is taken.
    """
    set_audit_resource(request, f"workspace:{body.name}")
    if not is_deployment_admin(caller):
        raise ForbiddenError("only an admin of workspace default may create workspaces")
    overrides = None if body.quotas is None else body.quotas.overrides()
    workspace = await services.tenancy.create_workspace(body.name, body.plan, overrides)
    limits = await push_limits(cp, workspace, _budget(body.budget))
    services.quotas.forget(workspace.name)
    return SafeJSONResponse(
        workspace_to_dict(workspace, limits),
        status_code=201,
        headers={"Location": f"{API_PREFIX}/workspaces/{workspace.name}"},
    )


@router.get(
    "/workspaces",
    response_model=WorkspaceListOut,
    tags=["workspaces"],
    operation_id="listWorkspaces",
    responses=problem_responses(),
)
async def list_workspaces(cp: Coordinator, services: Svc, caller: Caller) -> Response:
    """Every workspace for an admin of ``default``; otherwise the caller's own."""
    store = services.tenancy.store
    if is_deployment_admin(caller):
        workspaces = await store.list_workspaces()
    else:
        workspaces = [await store.get_workspace(caller.workspace_id)]
    out = [workspace_to_dict(w, await cp.get_workspace_limits(w.name)) for w in workspaces]
    return SafeJSONResponse({"workspaces": out})


@router.get(
    "/workspaces/{name}",
    response_model=WorkspaceOut,
    tags=["workspaces"],
    operation_id="getWorkspace",
    responses=problem_responses(404, 422),
)
async def get_workspace(
    name: WorkspacePath, cp: Coordinator, services: Svc, caller: Caller
) -> Response:
    """One workspace: the caller's own, or any for an admin of ``default``."""
    ensure_reachable(caller, name)
    workspace = await services.tenancy.store.get_workspace(name)
    return SafeJSONResponse(workspace_to_dict(workspace, await cp.get_workspace_limits(name)))


@router.patch(
    "/workspaces/{name}",
    response_model=WorkspaceOut,
    tags=["workspaces"],
    operation_id="updateWorkspace",
    responses=problem_responses(404, *BODY_PROBLEMS),
)
async def update_workspace(
    name: WorkspacePath,
    body: UpdateWorkspaceRequest,
    cp: Coordinator,
    services: Svc,
    caller: Caller,
) -> Response:
    """Change a workspace's plan, quota overrides or budget; the limits apply at once.

    Quota overrides merge into the earlier ones (``null`` is unlimited); ``"budget":
    null`` removes the budget. The plan and quotas are the deployment's to grant, so
    only an admin of ``default`` may change them; a workspace's own admin may set its
    budget.
    """
    ensure_reachable(caller, name)
    store = services.tenancy.store
    overrides = {} if body.quotas is None else body.quotas.overrides()
    if (overrides or body.plan is not None) and not is_deployment_admin(caller):
        raise ForbiddenError("only an admin of workspace default may change plans and quotas")
    if overrides or body.plan is not None:
        workspace = await store.update_quotas(name, overrides, plan=body.plan)
    else:
        workspace = await store.get_workspace(name)
    budget = _budget(body.budget) if "budget" in body.model_fields_set else KEEP
    limits = await push_limits(cp, workspace, budget)
    services.quotas.forget(name)
    return SafeJSONResponse(workspace_to_dict(workspace, limits))


# -- tokens -----------------------------------------------------------------------------


@router.post(
    "/tokens",
    status_code=201,
    response_model=IssuedTokenOut,
    tags=["tokens"],
    operation_id="issueToken",
    responses=problem_responses(404, *BODY_PROBLEMS),
)
async def issue_token(
    body: IssueTokenRequest, request: Request, services: Svc, caller: Caller
) -> Response:
    """Issue a token of the caller's workspace (or, for an admin of ``default``, of any).

    The answer holds the token's secret, shown this once: only a keyed hash is stored.
    """
    workspace = body.workspace or caller.workspace_id
    ensure_reachable(caller, workspace)
    info, secret = await services.tenancy.issue_token(
        workspace, Role(body.role), body.expires_in_s, created_by=caller.subject
    )
    set_audit_resource(request, f"token:{info.token_id}")
    return SafeJSONResponse(
        {
            "token_id": info.token_id,
            "token": secret,
            "workspace": info.workspace_id,
            "role": info.role.value,
            "expires_at": info.expires_at,
        },
        status_code=201,
    )


@router.get(
    "/tokens",
    response_model=TokenListOut,
    tags=["tokens"],
    operation_id="listTokens",
    responses=problem_responses(404, 422),
)
async def list_tokens(services: Svc, caller: Caller, workspace: WorkspaceQuery = None) -> Response:
    """Tokens of a workspace (default: the caller's), revoked and expired ones included,
    oldest first. Never a secret or a hash."""
    name = workspace or caller.workspace_id
    ensure_reachable(caller, name)
    tokens = await services.tenancy.store.list_tokens(name)
    return SafeJSONResponse({"tokens": [token_to_dict(t) for t in tokens]})


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    tags=["tokens"],
    operation_id="revokeToken",
    responses=problem_responses(404, 422),
)
async def revoke_token(token_id: TokenIdPath, services: Svc, caller: Caller) -> Response:
    """Revoke a token at once on every instance; revoking again changes nothing."""
    store = services.tenancy.store
    info = await store.get_token(token_id)
    if info.workspace_id != caller.workspace_id and not is_deployment_admin(caller):
        raise TokenNotFoundError(token_id)
    await services.tenancy.revoke(token_id)
    return Response(status_code=204)
