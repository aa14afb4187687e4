"""Access rules and feature flags of the caller's workspace under ``/api/control-plane``.

Rules are Cedar text that narrows the role grants (see :mod:`aragora.policy.cedar`);
a rule written here governs this instance's next decision and every instance within
about a second. Flags are served by :class:`aragora.policy.flags.Flag`; evaluating one
here reads the stored flag, so it always reflects the latest write.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.responses import Response

from aragora.control_plane.errors import ValidationError
from aragora.policy.flags import Flag
from aragora.policy.models import Rule
from aragora.policy.store import FlagNotFoundError
from aragora.server.admin_schemas import (
    DOCUMENT_ID_PATTERN,
    MAX_DOCUMENT_ID_LENGTH,
    FlagEvaluationOut,
    FlagListOut,
    FlagOut,
    PutFlagRequest,
    PutRuleOut,
    PutRuleRequest,
    RuleListOut,
)
from aragora.server.authz import API_PREFIX, authorize_route
from aragora.server.handlers.responses import BODY_PROBLEMS, problem_responses
from aragora.server.middleware.tenancy import current_workspace
from aragora.server.rendering import SafeJSONResponse
from aragora.server.services import Services, get_services

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize_route)])

Workspace = Annotated[str, Depends(current_workspace)]
Svc = Annotated[Services, Depends(get_services)]
RuleId = Annotated[
    str, Path(min_length=1, max_length=MAX_DOCUMENT_ID_LENGTH, pattern=DOCUMENT_ID_PATTERN)
]
FlagKey = Annotated[
    str, Path(min_length=1, max_length=MAX_DOCUMENT_ID_LENGTH, pattern=DOCUMENT_ID_PATTERN)
]
MAX_TARGETING_KEY_LENGTH = 256


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    return {
        "rule_id": rule.rule_id,
        "text": rule.text,
        "description": rule.description,
        "updated_at": rule.updated_at,
    }


def flag_to_dict(flag: Flag) -> dict[str, Any]:
    return {"key": flag.key, **flag.to_dict(), "kind": flag.kind}


# -- access rules -------------------------------------------------------------------------


@router.get(
    "/policies",
    response_model=RuleListOut,
    tags=["policies"],
    operation_id="listPolicies",
    responses=problem_responses(),
)
async def list_policies(ws: Workspace, services: Svc) -> Response:
    """The workspace's rules and their version (bumped by every write)."""
    version, rules = await services.policy.list_rules(ws)
    return SafeJSONResponse({"version": version, "rules": [rule_to_dict(r) for r in rules]})


@router.put(
    "/policies/{rule_id}",
    response_model=PutRuleOut,
    tags=["policies"],
    operation_id="putPolicy",
    responses=problem_responses(*BODY_PROBLEMS),
)
async def put_policy(
    rule_id: RuleId, body: PutRuleRequest, ws: Workspace, services: Svc
) -> Response:
    """Create or replace a rule. Text that is not valid Cedar for the request schema is
    422 naming the field ``text``, with Cedar's message; nothing is stored then."""
    try:
        version = await services.policy.put_rule(ws, rule_id, body.text, body.description)
    except ValidationError as exc:
        if exc.field == "policy":
            raise ValidationError("text", exc.reason) from None
        raise
    _, rules = await services.policy.list_rules(ws)
    stored = next((r for r in rules if r.rule_id == rule_id), None)
    rule = stored or Rule(rule_id, body.text, body.description)
    return SafeJSONResponse({**rule_to_dict(rule), "version": version})


@router.delete(
    "/policies/{rule_id}",
    status_code=204,
    response_class=Response,
    tags=["policies"],
    operation_id="deletePolicy",
    responses=problem_responses(404, 422),
)
async def delete_policy(rule_id: RuleId, ws: Workspace, services: Svc) -> Response:
    """Remove a rule; 404 when the workspace has no rule of that id."""
    await services.policy.delete_rule(ws, rule_id)
    return Response(status_code=204)


# -- feature flags --------------------------------------------------------------------------


@router.get(
    "/flags",
    response_model=FlagListOut,
    tags=["flags"],
    operation_id="listFlags",
    responses=problem_responses(),
)
async def list_flags(ws: Workspace, services: Svc) -> Response:
    """The workspace's feature flags and their version."""
    version, flags = await services.policy.rules_store.get_flags(ws)
    return SafeJSONResponse({"version": version, "flags": [flag_to_dict(f) for f in flags]})


@router.put(
    "/flags/{key}",
    response_model=FlagOut,
    tags=["flags"],
    operation_id="putFlag",
    responses=problem_responses(*BODY_PROBLEMS),
)
async def put_flag(key: FlagKey, body: PutFlagRequest, ws: Workspace, services: Svc) -> Response:
    """Create or replace a flag; 422 names the field that is wrong (variants of mixed
    types, an unknown default or rollout variant, percentages not adding up to 100)."""
    flag = Flag(
        key,
        body.variants,
        body.default_variant,
        tuple((str(variant), int(percent)) for variant, percent in body.rollout),
        body.enabled,
        body.description,
    )
    await services.policy.rules_store.put_flag(ws, flag)
    return SafeJSONResponse(flag_to_dict(flag))


@router.delete(
    "/flags/{key}",
    status_code=204,
    response_class=Response,
    tags=["flags"],
    operation_id="deleteFlag",
    responses=problem_responses(404, 422),
)
async def delete_flag(key: FlagKey, ws: Workspace, services: Svc) -> Response:
    """Remove a flag; 404 when the workspace has no flag with that key."""
    await services.policy.rules_store.delete_flag(ws, key)
    return Response(status_code=204)


@router.get(
    "/flags/{key}/evaluate",
    response_model=FlagEvaluationOut,
    tags=["flags"],
    operation_id="evaluateFlag",
    responses=problem_responses(404, 422),
)
async def evaluate_flag(
    key: FlagKey,
    ws: Workspace,
    services: Svc,
    targeting_key: Annotated[
        str | None, Query(min_length=1, max_length=MAX_TARGETING_KEY_LENGTH)
    ] = None,
) -> Response:
    """What the flag serves to ``targeting_key`` (any role may ask)."""
    _, flags = await services.policy.rules_store.get_flags(ws)
    flag = next((f for f in flags if f.key == key), None)
    if flag is None:
        raise FlagNotFoundError(key)
    resolution = flag.evaluate(targeting_key)
    return SafeJSONResponse(
        {
            "key": key,
            "value": resolution.value,
            "variant": resolution.variant,
            "reason": resolution.reason,
        }
    )
