"""Spend and the audit trail of the caller's workspace under ``/api/control-plane``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from aragora.audit.log import MAX_PAGE_LIMIT
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.server.admin_schemas import AuditPageOut, AuditVerifyOut, SpendOut
from aragora.server.authz import API_PREFIX, authorize_route
from aragora.server.handlers.responses import problem_responses
from aragora.server.middleware.tenancy import current_workspace
from aragora.server.rendering import SafeJSONResponse
from aragora.server.state import get_coordinator

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize_route)])

Coordinator = Annotated[ControlPlaneCoordinator, Depends(get_coordinator)]
Workspace = Annotated[str, Depends(current_workspace)]
MAX_SEQ = 2**53 - 1


@router.get(
    "/budget",
    response_model=SpendOut,
    tags=["budget"],
    operation_id="getBudget",
    responses=problem_responses(),
)
async def get_budget(cp: Coordinator, ws: Workspace) -> Response:
    """Reserved and spent cost of the current budget period, and the workspace's limits."""
    spend = await cp.get_spend(ws)
    limits = await cp.get_workspace_limits(ws)
    return SafeJSONResponse(
        {
            "period": spend.period,
            "budget": spend.budget,
            "reserved": spend.reserved,
            "spent": spend.spent,
            "by_task_type": spend.by_task_type,
            "by_model": spend.by_model,
            "limits": {
                "max_agents": limits.max_agents,
                "max_pending_tasks": limits.max_pending_tasks,
                "max_running_tasks": limits.max_running_tasks,
                "max_payload_bytes": limits.max_payload_bytes,
                "budget": limits.budget,
                "budget_period": limits.budget_period.value,
                "budget_soft_ratio": limits.budget_soft_ratio,
            },
        }
    )


@router.get(
    "/audit",
    response_model=AuditPageOut,
    tags=["audit"],
    operation_id="listAuditEvents",
    responses=problem_responses(409, 422),
)
async def list_audit_events(
    cp: Coordinator,
    ws: Workspace,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = 100,
) -> Response:
    """Audit events of the workspace after ``after_seq``, oldest first.

    409 (``audit-chain-damaged``) when a stored event on the page cannot be decoded;
    ``/audit/verify`` says where the chain is damaged.
    """
    events, next_after_seq = await cp.audit.page(ws, after_seq, limit)
    return SafeJSONResponse(
        {"events": [e.to_dict() for e in events], "next_after_seq": next_after_seq}
    )


@router.get(
    "/audit/verify",
    response_model=AuditVerifyOut,
    tags=["audit"],
    operation_id="verifyAudit",
    responses=problem_responses(),
)
async def verify_audit(cp: Coordinator, ws: Workspace) -> Response:
    """Check the workspace's whole audit chain: every hash, every link, no gaps."""
    result = await cp.audit.verify(ws)
    return SafeJSONResponse(
        {
            "ok": result.ok,
            "checked": result.checked,
            "first_broken_seq": result.first_broken_seq,
            "reason": result.reason,
            "head_seq": result.head_seq,
            "head_hash": result.head_hash,
        }
    )
