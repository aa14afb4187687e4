"""PolicyStore on every store: versioned rules and flags, atomic writes, validation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from aragora.control_plane import ControlPlaneCoordinator, ValidationError
from aragora.policy import Flag, FlagNotFoundError, PolicyStore, RuleNotFoundError
from aragora.policy.store import MAX_RULES_PER_WORKSPACE, create_policy_store
from aragora.store.redis import RedisStore
from tests.conftest import Clock, CoordinatorFactory

WS = "acme"
RULE = 'forbid(principal, action == Action::"task.retry", resource);'


async def test_rules_are_versioned_and_listed_by_id(
    policy_store: PolicyStore, cp: ControlPlaneCoordinator, clock: Clock
) -> None:
    assert await policy_store.get_rules(WS) == (0, [])
    assert await policy_store.rules_version(WS) == 0
    clock.advance(100.0)
    now = await cp.store.now()
    assert await policy_store.put_rule(WS, "b-rule", RULE, "no retries") == 1
    assert await policy_store.put_rule(WS, "a-rule", RULE) == 2
    version, rules = await policy_store.get_rules(WS)
    assert version == 2 == await policy_store.rules_version(WS)
    assert [(r.rule_id, r.text, r.description) for r in rules] == [
        ("a-rule", RULE, ""),
        ("b-rule", RULE, "no retries"),
    ]
    assert all(r.updated_at == pytest.approx(now, abs=5.0) for r in rules)

    assert await policy_store.put_rule(WS, "b-rule", RULE, "replaced") == 3
    assert (await policy_store.get_rules(WS))[1][1].description == "replaced"
    assert await policy_store.delete_rule(WS, "a-rule") == 4
    assert [r.rule_id for r in (await policy_store.get_rules(WS))[1]] == ["b-rule"]


async def test_deleting_an_unknown_rule_is_not_found_and_changes_nothing(
    policy_store: PolicyStore,
) -> None:
    await policy_store.put_rule(WS, "r", RULE)
    with pytest.raises(RuleNotFoundError):
        await policy_store.delete_rule(WS, "missing")
    assert await policy_store.rules_version(WS) == 1


async def test_workspaces_have_their_own_rules_and_versions(policy_store: PolicyStore) -> None:
    await policy_store.put_rule(WS, "r", RULE)
    assert await policy_store.get_rules("other") == (0, [])
    with pytest.raises(RuleNotFoundError):
        await policy_store.delete_rule("other", "r")


async def test_writes_on_one_instance_are_read_on_another(
    policy_store: PolicyStore, cp_factory: CoordinatorFactory
) -> None:
    other = create_policy_store((await cp_factory()).store)
    await other.put_rule(WS, "r", RULE)
    await other.put_flag(WS, Flag.boolean("f"))
    assert [r.rule_id for r in (await policy_store.get_rules(WS))[1]] == ["r"]
    assert (await policy_store.get_flags(WS))[1] == [Flag.boolean("f")]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.put_rule(WS, "", RULE), "rule_id"),
        (lambda s: s.put_rule(WS, "has space", RULE), "rule_id"),
        (lambda s: s.put_rule(WS, "x" * 65, RULE), "rule_id"),
        (lambda s: s.put_rule(WS, "r", RULE, "d" * 1001), "description"),
        (lambda s: s.put_rule("bad workspace", "r", RULE), "workspace_id"),
        (lambda s: s.delete_rule(WS, "{r}"), "rule_id"),
        (lambda s: s.put_flag(WS, Flag.boolean("bad key")), "flag_key"),
    ],
)
async def test_bad_input_is_rejected_before_anything_is_written(
    policy_store: PolicyStore, call: Callable[[PolicyStore], Awaitable[int]], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await call(policy_store)
    assert caught.value.field == field
    assert await policy_store.rules_version(WS) == 0


async def test_a_workspace_holds_a_bounded_number_of_rules(policy_store: PolicyStore) -> None:
    for n in range(MAX_RULES_PER_WORKSPACE):
        await policy_store.put_rule(WS, f"r{n}", RULE)
    with pytest.raises(ValidationError) as caught:
        await policy_store.put_rule(WS, "one-more", RULE)
    assert caught.value.field == "rule_id"
    # Replacing an existing rule is still fine.
    assert await policy_store.put_rule(WS, "r0", RULE, "new") == MAX_RULES_PER_WORKSPACE + 1


async def test_flags_are_versioned_separately_from_rules(policy_store: PolicyStore) -> None:
    colour = Flag("colour", {"a": "blue", "b": "green"}, "a", (("a", 50), ("b", 50)))
    assert await policy_store.put_flag(WS, Flag.boolean("dark-mode", percent_on=25)) == 1
    assert await policy_store.put_flag(WS, colour) == 2
    assert await policy_store.rules_version(WS) == 0
    version, flags = await policy_store.get_flags(WS)
    assert version == 2 == await policy_store.flags_version(WS)
    assert flags == [colour, Flag.boolean("dark-mode", percent_on=25)]
    assert await policy_store.delete_flag(WS, "colour") == 3
    with pytest.raises(FlagNotFoundError):
        await policy_store.delete_flag(WS, "colour")
    assert await policy_store.flags_version(WS) == 3


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_redis_keys_live_in_the_workspace_slot(
    policy_store: PolicyStore, cp: ControlPlaneCoordinator
) -> None:
    assert isinstance(cp.store, RedisStore)
    await policy_store.put_rule(WS, "r", RULE)
    await policy_store.put_flag(WS, Flag.boolean("f"))
    keys = [key async for key in cp.store.iterate_keys()]
    policy_keys = sorted(k for k in keys if ":policy:" in k)
    prefix = cp.store.workspace_key(WS, "")
    assert policy_keys == sorted(
        prefix + suffix
        for suffix in (
            "policy:rules",
            "policy:rules:version",
            "policy:flags",
            "policy:flags:version",
        )
    )
