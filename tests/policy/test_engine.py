"""PolicyEngine: role grants narrowed by workspace Cedar rules, cached and refreshed."""

from __future__ import annotations

import pytest
from openfeature.evaluation_context import EvaluationContext

from aragora.control_plane import ControlPlaneCoordinator, TaskPriority, ValidationError
from aragora.policy import (
    AragoraFlagProvider,
    Flag,
    PolicyEngine,
    PolicyStore,
    RateLimiter,
    create_policy_store,
)
from aragora.tenancy.models import ROLE_ACTIONS, Action, Principal, Role, role_allows
from tests.conftest import Clock, CoordinatorFactory
from tests.policy.conftest import ManualClock

WS = "acme"
NO_CRITICAL_FOR_SUBMITTERS = (
    'forbid(principal, action == Action::"task.submit", resource)'
    ' when { principal.role == "submitter" && context.priority == "critical" };'
)
EXECUTE_NEEDS_CODE = (
    'forbid(principal, action == Action::"task.claim", resource)'
    ' when { context.task_type == "execute" && !context.agent_capabilities.contains("code") };'
)

RULE_PAYLOAD = "forbid(principal, action, resource) when { context.payload_bytes > 1000 };"


def principal(role: Role, token_id: str = "tok-1", workspace_id: str = WS) -> Principal:
    return Principal(workspace_id=workspace_id, role=role, token_id=token_id)


@pytest.fixture
def engine(policy_store: PolicyStore, ticks: ManualClock) -> PolicyEngine:
    return PolicyEngine(policy_store, monotonic=ticks)


# -- role grants -------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
async def test_without_rules_each_role_gets_exactly_its_grant(
    engine: PolicyEngine, role: Role
) -> None:
    for action in Action:
        decision = await engine.authorize(principal(role), action)
        assert decision.allowed is role_allows(role, action), (role, action)
        if not decision.allowed:
            assert decision.reason == f"role {role.value} lacks {action.value}"
    assert {a for a in Action if (await engine.authorize(principal(role), a)).allowed} == set(
        ROLE_ACTIONS[role]
    )


async def test_a_rule_cannot_widen_a_role_grant(engine: PolicyEngine) -> None:
    await engine.put_rule(WS, "let-viewers-submit", "permit(principal, action, resource);")
    decision = await engine.authorize(principal(Role.VIEWER), Action.TASK_SUBMIT)
    assert not decision.allowed
    assert decision.reason == "role viewer lacks task.submit"


# -- the two example rules -----------------------------------------------------------------


async def test_submitters_may_not_submit_critical(engine: PolicyEngine) -> None:
    await engine.put_rule(WS, "no-critical", NO_CRITICAL_FOR_SUBMITTERS, "submitters stay below")
    submitter, operator = principal(Role.SUBMITTER), principal(Role.OPERATOR, "tok-2")

    denied = await engine.authorize(submitter, Action.TASK_SUBMIT, {"priority": "critical"})
    assert not denied.allowed
    assert denied.reason == "denied by rule no-critical"
    assert denied.rule_ids == ("no-critical",)
    # Priorities are compared lower-cased, so the enum and any spelling match.
    upper = await engine.authorize(submitter, Action.TASK_SUBMIT, {"priority": "CRITICAL"})
    assert not upper.allowed
    as_enum = {"priority": TaskPriority.CRITICAL}
    assert not (await engine.authorize(submitter, Action.TASK_SUBMIT, as_enum)).allowed

    for priority in ("high", "normal", "low"):
        decision = await engine.authorize(submitter, Action.TASK_SUBMIT, {"priority": priority})
        assert decision.allowed, priority
    assert (await engine.authorize(operator, Action.TASK_SUBMIT, {"priority": "critical"})).allowed
    # Other actions of the submitter are untouched.
    assert (await engine.authorize(submitter, Action.TASK_CANCEL, {"priority": "critical"})).allowed


async def test_only_agents_with_code_may_claim_execute_tasks(engine: PolicyEngine) -> None:
    await engine.put_rule(WS, "execute-needs-code", EXECUTE_NEEDS_CODE)
    agent = principal(Role.AGENT)

    async def claim(task_type: str, capabilities: list[str]) -> bool:
        attrs = {"task_type": task_type, "agent_capabilities": capabilities}
        return (await engine.authorize(agent, Action.TASK_CLAIM, attrs)).allowed

    assert await claim("execute", ["code"])
    assert await claim("execute", ["search", "code"])
    assert not await claim("execute", ["search"])
    assert not await claim("execute", [])
    assert await claim("debate", [])
    denied = await engine.authorize(agent, Action.TASK_CLAIM, {"task_type": "execute"})
    assert denied.reason == "denied by rule execute-needs-code"


async def test_deny_overrides_allow_when_a_permit_and_a_forbid_both_match(
    engine: PolicyEngine,
) -> None:
    await engine.put_rule(
        WS,
        "both",
        'permit(principal, action == Action::"task.submit", resource);\n'
        'forbid(principal, action == Action::"task.submit", resource)'
        " when { context.payload_bytes > 1000 };",
    )
    await engine.put_rule(WS, "also-permit", "permit(principal, action, resource);")
    submitter = principal(Role.SUBMITTER)
    small = await engine.authorize(submitter, Action.TASK_SUBMIT, {"payload_bytes": 10})
    assert small.allowed
    big = await engine.authorize(submitter, Action.TASK_SUBMIT, {"payload_bytes": 5000})
    assert not big.allowed
    assert big.rule_ids == ("both",)


async def test_rules_can_use_role_membership_token_and_time_of_day(
    policy_store: PolicyStore, ticks: ManualClock
) -> None:
    wall = ManualClock(start_s=3 * 3600 + 59)  # 03:00:59 UTC on 1 January 1970
    engine = PolicyEngine(policy_store, monotonic=ticks, clock=wall)
    await engine.put_rule(
        WS,
        "night",
        'forbid(principal in Role::"agent", action == Action::"task.claim", resource)'
        " when { context.hour_utc < 6 };",
    )
    await engine.put_rule(
        WS, "blocked-token", 'forbid(principal == Token::"tok-bad", action, resource);'
    )
    agent = principal(Role.AGENT)
    night = await engine.authorize(agent, Action.TASK_CLAIM)
    assert not night.allowed and night.rule_ids == ("night",)
    wall.advance(3 * 3600)  # 06:00:59
    assert (await engine.authorize(agent, Action.TASK_CLAIM)).allowed
    bad = await engine.authorize(principal(Role.OPERATOR, "tok-bad"), Action.TASK_READ)
    assert bad.reason == "denied by rule blocked-token"
    assert (await engine.authorize(principal(Role.OPERATOR, "tok-ok"), Action.TASK_READ)).allowed


async def test_a_forbid_that_fails_to_evaluate_denies(engine: PolicyEngine) -> None:
    overflow = (
        "forbid(principal, action, resource)"
        " when { context.payload_bytes * 9223372036854775807 < 0 };"
    )
    await engine.put_rule(WS, "overflows", overflow)
    operator = principal(Role.OPERATOR)
    assert (await engine.authorize(operator, Action.TASK_READ, {"payload_bytes": 1})).allowed
    failed = await engine.authorize(operator, Action.TASK_READ, {"payload_bytes": 2})
    assert not failed.allowed
    assert failed.reason == "denied: rule overflows failed to evaluate"


async def test_admins_may_always_manage_policies(engine: PolicyEngine) -> None:
    await engine.put_rule(WS, "lock-everything", "forbid(principal, action, resource);")
    admin = principal(Role.ADMIN)
    assert (await engine.authorize(admin, Action.POLICY_MANAGE)).allowed
    assert not (await engine.authorize(admin, Action.TOKEN_MANAGE)).allowed
    await engine.delete_rule(WS, "lock-everything")
    assert (await engine.authorize(admin, Action.TOKEN_MANAGE)).allowed


async def test_rules_of_one_workspace_do_not_touch_another(engine: PolicyEngine) -> None:
    await engine.put_rule(WS, "lock-everything", "forbid(principal, action, resource);")
    assert not (await engine.authorize(principal(Role.OPERATOR), Action.TASK_READ)).allowed
    other = principal(Role.OPERATOR, workspace_id="other")
    assert (await engine.authorize(other, Action.TASK_READ)).allowed


async def test_unknown_request_attributes_are_a_caller_error(engine: PolicyEngine) -> None:
    operator = principal(Role.OPERATOR)
    with pytest.raises(ValueError, match="unknown policy attribute"):
        await engine.authorize(operator, Action.TASK_SUBMIT, {"priorty": "high"})
    with pytest.raises(ValueError, match="payload_bytes"):
        await engine.authorize(operator, Action.TASK_SUBMIT, {"payload_bytes": -1})
    with pytest.raises(ValueError, match="agent_capabilities"):
        await engine.authorize(operator, Action.TASK_CLAIM, {"agent_capabilities": "code"})
    with pytest.raises(ValueError, match="required_capabilities"):
        await engine.authorize(operator, Action.TASK_SUBMIT, {"required_capabilities": ["a", 1]})
    with pytest.raises(ValueError, match="task_type"):
        await engine.authorize(operator, Action.TASK_SUBMIT, {"task_type": 3})
    # None means "not given".
    none = {"task_type": None, "agent_capabilities": None, "payload_bytes": None}
    assert (await engine.authorize(operator, Action.TASK_SUBMIT, none)).allowed


# -- validation when saved -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("forbid(principal, action, resource", "does not parse"),
        ("permit(principal == ?principal, action, resource);", "templates"),
        ("", "non-empty"),
        ("// only a comment", "no policy statement"),
        (
            'forbid(principal, action == Action::"task.submitt", resource);',
            'unrecognized action `Action::"task.submitt"`',
        ),
        (
            'forbid(principal, action, resource) when { context.priorty == "high" };',
            "attribute `priorty` in context",
        ),
        ("forbid(principal, action, resource) when { context.payload_bytes };", "type"),
        ("x" * 10_001, "at most 10000 characters"),
    ],
)
async def test_bad_rule_text_is_rejected_naming_the_policy_field(
    engine: PolicyEngine, text: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await engine.put_rule(WS, "bad", text)
    assert caught.value.field == "policy"
    assert message in caught.value.reason
    assert await engine.list_rules(WS) == (0, [])


# -- cache and refresh ---------------------------------------------------------------------


async def test_decisions_are_cached_per_rules_version(
    engine: PolicyEngine, ticks: ManualClock
) -> None:
    submitter = principal(Role.SUBMITTER)
    critical = {"priority": "critical"}
    assert (await engine.authorize(submitter, Action.TASK_SUBMIT, critical)).allowed
    assert (await engine.authorize(submitter, Action.TASK_SUBMIT, critical)).allowed
    assert engine.cache_stats.hits == 1 and engine.cache_stats.misses == 1
    await engine.put_rule(WS, "no-critical", NO_CRITICAL_FOR_SUBMITTERS)
    # The writing instance applies its own change at once, without waiting to refresh.
    assert not (await engine.authorize(submitter, Action.TASK_SUBMIT, critical)).allowed
    assert engine.cache_stats.misses == 2


async def test_a_rule_change_on_another_instance_applies_after_the_refresh_interval(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, ticks: ManualClock
) -> None:
    engine = PolicyEngine(create_policy_store(cp.store), monotonic=ticks, rules_refresh_s=1.0)
    other = create_policy_store((await cp_factory()).store)
    submitter = principal(Role.SUBMITTER)
    critical = {"priority": "critical"}
    assert (await engine.authorize(submitter, Action.TASK_SUBMIT, critical)).allowed

    await other.put_rule(WS, "no-critical", NO_CRITICAL_FOR_SUBMITTERS)
    ticks.advance(0.5)  # within the interval the instance may still answer from its cache
    assert (await engine.authorize(submitter, Action.TASK_SUBMIT, critical)).allowed
    ticks.advance(0.5)
    denied = await engine.authorize(submitter, Action.TASK_SUBMIT, critical)
    assert denied.reason == "denied by rule no-critical"

    await other.delete_rule(WS, "no-critical")
    ticks.advance(1.0)
    assert (await engine.authorize(submitter, Action.TASK_SUBMIT, critical)).allowed


async def test_an_unchanged_version_keeps_the_compiled_rules(
    cp: ControlPlaneCoordinator, ticks: ManualClock
) -> None:
    engine = PolicyEngine(create_policy_store(cp.store), monotonic=ticks, cache_size=0)
    await engine.put_rule(WS, "no-critical", NO_CRITICAL_FOR_SUBMITTERS)
    submitter = principal(Role.SUBMITTER)
    for _ in range(3):
        ticks.advance(5.0)
        decision = await engine.authorize(submitter, Action.TASK_SUBMIT, {"priority": "critical"})
        assert not decision.allowed
    assert engine.cache_stats.size == 0 and engine.cache_stats.hits == 0


async def test_the_cache_key_holds_only_what_the_rules_read(engine: PolicyEngine) -> None:
    submitter = principal(Role.SUBMITTER)
    for n in range(5):  # no rule reads payload_bytes, hour_utc or the token
        token = principal(Role.SUBMITTER, token_id=f"tok-{n}")
        await engine.authorize(token, Action.TASK_SUBMIT, {"payload_bytes": n})
    assert (engine.cache_stats.misses, engine.cache_stats.hits) == (1, 4)

    await engine.put_rule(WS, "small", RULE_PAYLOAD)
    for n in (1, 2, 2000, 1):
        decision = await engine.authorize(submitter, Action.TASK_SUBMIT, {"payload_bytes": n})
        assert decision.allowed is (n <= 1000)
    assert (engine.cache_stats.misses, engine.cache_stats.hits) == (4, 5)

    await engine.put_rule(WS, "token", 'forbid(principal == Token::"tok-x", action, resource);')
    blocked = principal(Role.SUBMITTER, token_id="tok-x")
    assert (await engine.authorize(submitter, Action.TASK_READ)).allowed
    assert not (await engine.authorize(blocked, Action.TASK_READ)).allowed


async def test_the_cache_is_bounded(policy_store: PolicyStore, ticks: ManualClock) -> None:
    engine = PolicyEngine(policy_store, monotonic=ticks, cache_size=3)
    await engine.put_rule(WS, "small", RULE_PAYLOAD)
    for n in range(10):
        await engine.authorize(principal(Role.SUBMITTER), Action.TASK_SUBMIT, {"payload_bytes": n})
    assert engine.cache_stats.size == 3


async def test_for_store_builds_every_part_on_the_store_and_its_clock(
    cp: ControlPlaneCoordinator, clock: Clock, ticks: ManualClock
) -> None:
    engine = PolicyEngine.for_store(cp.store, monotonic=ticks)
    assert isinstance(engine.rate_limiter, RateLimiter)
    assert isinstance(engine.flags, AragoraFlagProvider)
    assert (await engine.rate_limiter.hit(WS, "k", limit=1, window_s=60)).allowed

    await engine.rules_store.put_flag(WS, Flag.boolean("f"))
    await engine.flags.ensure(WS)
    ctx = EvaluationContext("user-1", {"workspace_id": WS})
    assert engine.flags.resolve_boolean_details("f", False, ctx).value is True

    now_s = await cp.store.now()
    hour = int(now_s // 3600) % 24
    # A rule denying the current hour and the next: moving the store clock two hours
    # ahead (outside it) lifts the denial, because hour_utc follows the store clock.
    await engine.put_rule(
        WS,
        "two-hours",
        "forbid(principal, action, resource) when {"
        f" context.hour_utc == {hour} || context.hour_utc == {(hour + 1) % 24} }};",
    )
    operator = principal(Role.OPERATOR)
    assert not (await engine.authorize(operator, Action.TASK_READ)).allowed
    clock.advance(2 * 3600)
    assert (await engine.authorize(operator, Action.TASK_READ)).allowed
