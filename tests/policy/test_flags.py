"""Feature flags: stored per workspace, rolled out by a stable hash, served to OpenFeature."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from aragora.control_plane import ValidationError
from aragora.policy import (
    AragoraFlagProvider,
    Flag,
    PolicyStore,
    create_policy_store,
    rollout_bucket,
)
from tests.conftest import CoordinatorFactory
from tests.policy.conftest import ManualClock

WS = "acme"


def context(targeting_key: str | None = None, workspace_id: str | None = WS) -> EvaluationContext:
    attributes: dict[str, Any] = {} if workspace_id is None else {"workspace_id": workspace_id}
    return EvaluationContext(targeting_key=targeting_key, attributes=attributes)


@pytest.fixture
async def provider(policy_store: PolicyStore, ticks: ManualClock) -> AragoraFlagProvider:
    await policy_store.put_flag(WS, Flag.boolean("dark-mode"))
    await policy_store.put_flag(WS, Flag("colour", {"a": "blue", "b": "green"}, "b"))
    await policy_store.put_flag(WS, Flag("max-batch", {"small": 10, "big": 1000}, "big"))
    await policy_store.put_flag(WS, Flag("ratio", {"low": 0.25, "high": 0.75}, "high"))
    await policy_store.put_flag(WS, Flag("limits", {"x": {"cpu": 2, "tags": ["a"]}}, "x"))
    await policy_store.put_flag(WS, Flag.boolean("off", enabled=False))
    await policy_store.put_flag(WS, Flag.boolean("beta", percent_on=30))
    flags = AragoraFlagProvider(policy_store, monotonic=ticks)
    await flags.refresh(WS)
    return flags


@pytest.fixture
def openfeature_api() -> Iterator[None]:
    """Leaves the global OpenFeature state as it found it."""
    yield
    api.shutdown()


# -- evaluation ----------------------------------------------------------------------------


def test_boolean_and_variant_flags_serve_their_default_variant() -> None:
    assert Flag.boolean("f").evaluate("anyone").value is True
    colour = Flag("colour", {"a": "blue", "b": "green"}, "b").evaluate(None)
    assert (colour.variant, colour.value, colour.reason) == ("b", "green", "STATIC")
    disabled = Flag.boolean("f", enabled=False).evaluate("anyone")
    assert (disabled.variant, disabled.reason) == (None, "DISABLED")


def test_rollout_is_stable_per_targeting_key_and_roughly_proportional() -> None:
    flag = Flag.boolean("beta", percent_on=30)
    keys = [f"user-{n}" for n in range(1000)]
    first = [flag.evaluate(key).value for key in keys]
    assert first == [flag.evaluate(key).value for key in keys]
    assert 250 <= sum(first) <= 350
    assert {flag.evaluate(key).reason for key in keys} == {"SPLIT"}
    # Widening the rollout keeps everyone who already had the feature.
    wider = Flag.boolean("beta", percent_on=60)
    wider_on = [wider.evaluate(key).value for key in keys]
    assert all(w for f, w in zip(first, wider_on, strict=True) if f)
    assert 550 <= sum(wider_on) <= 650
    # Another flag buckets the same keys independently.
    other = [Flag.boolean("other", percent_on=30).evaluate(key).value for key in keys]
    assert other != first


def test_variant_rollout_splits_by_bucket() -> None:
    flag = Flag(
        "colour", {"a": "blue", "b": "green", "c": "red"}, "a", (("a", 50), ("b", 25), ("c", 25))
    )
    counts = {"a": 0, "b": 0, "c": 0}
    for n in range(1000):
        resolution = flag.evaluate(f"key-{n}")
        assert resolution.variant is not None
        counts[resolution.variant] += 1
        bucket = rollout_bucket("colour", f"key-{n}")
        assert resolution.variant == ("a" if bucket < 50 else "b" if bucket < 75 else "c")
    assert 450 <= counts["a"] <= 550 and 200 <= counts["b"] <= 300 and 200 <= counts["c"] <= 300
    no_key = flag.evaluate(None)
    assert (no_key.variant, no_key.reason) == ("a", "DEFAULT")


def test_the_bucket_is_sha256_of_flag_and_targeting_key() -> None:
    import hashlib

    digest = hashlib.sha256(b"beta/user-1").digest()
    assert rollout_bucket("beta", "user-1") == int.from_bytes(digest[:8], "big") % 100
    assert all(0 <= rollout_bucket("f", str(n)) < 100 for n in range(200))


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Flag("f", {}, "a"), "variants"),
        (lambda: Flag("f", {"a": 1, "b": "x"}, "a"), "variants"),
        (lambda: Flag("f", {"a": float("nan")}, "a"), "variants"),
        (lambda: Flag("f", {"a": {1, 2}}, "a"), "variants"),
        (lambda: Flag("f", {"a": 1}, "b"), "default_variant"),
        (lambda: Flag("f", {"a": 1, "b": 2}, "a", (("a", 50), ("b", 40))), "rollout"),
        (lambda: Flag("f", {"a": 1}, "a", (("z", 100),)), "rollout"),
        (lambda: Flag.boolean("f", percent_on=101), "rollout"),
        (lambda: Flag("f", {"a": 1}, "a", description="d" * 1001), "description"),
    ],
)
def test_bad_flags_are_rejected_naming_the_field(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        build()
    assert caught.value.field == field


# -- provider -------------------------------------------------------------------------------


def test_the_provider_resolves_every_type(provider: AragoraFlagProvider) -> None:
    ctx = context("user-1")
    boolean = provider.resolve_boolean_details("dark-mode", False, ctx)
    assert (boolean.value, boolean.variant, boolean.reason) == (True, "on", Reason.STATIC)
    assert boolean.flag_metadata["workspace_id"] == WS
    assert provider.resolve_string_details("colour", "none", ctx).value == "green"
    assert provider.resolve_integer_details("max-batch", 0, ctx).value == 1000
    assert provider.resolve_float_details("ratio", 0.0, ctx).value == 0.75
    assert provider.resolve_float_details("max-batch", 0.0, ctx).value == 1000.0
    assert provider.resolve_object_details("limits", {}, ctx).value == {"cpu": 2, "tags": ["a"]}
    disabled = provider.resolve_boolean_details("off", True, ctx)
    assert (disabled.value, disabled.reason, disabled.error_code) == (True, Reason.DISABLED, None)


@pytest.mark.parametrize(
    ("flag_key", "ctx", "code"),
    [
        ("missing", context("u"), ErrorCode.FLAG_NOT_FOUND),
        ("colour", context("u"), ErrorCode.TYPE_MISMATCH),
        ("dark-mode", context("u", workspace_id=None), ErrorCode.INVALID_CONTEXT),
        ("dark-mode", None, ErrorCode.INVALID_CONTEXT),
        ("dark-mode", context("u", workspace_id="not-loaded"), ErrorCode.PROVIDER_NOT_READY),
    ],
)
def test_the_provider_answers_errors_with_the_default(
    provider: AragoraFlagProvider, flag_key: str, ctx: EvaluationContext | None, code: ErrorCode
) -> None:
    details = provider.resolve_boolean_details(flag_key, False, ctx)
    assert (details.value, details.error_code, details.reason) == (False, code, Reason.ERROR)
    assert details.error_message


async def test_changes_reach_the_snapshot_on_refresh_or_after_the_interval(
    provider: AragoraFlagProvider, cp_factory: CoordinatorFactory, ticks: ManualClock
) -> None:
    other = create_policy_store((await cp_factory()).store)
    await other.put_flag(WS, Flag.boolean("dark-mode", enabled=False))
    ctx = context("user-1")
    assert provider.resolve_boolean_details("dark-mode", False, ctx).value is True

    await provider.ensure(WS)  # checked less than refresh_s ago: still the snapshot
    assert provider.resolve_boolean_details("dark-mode", False, ctx).value is True
    ticks.advance(1.0)
    await provider.ensure(WS)
    assert provider.resolve_boolean_details("dark-mode", False, ctx).reason == Reason.DISABLED

    await other.delete_flag(WS, "dark-mode")
    await provider.refresh()  # every loaded workspace, at once
    code = provider.resolve_boolean_details("dark-mode", False, ctx).error_code
    assert code == ErrorCode.FLAG_NOT_FOUND


async def test_ensure_loads_a_workspace_it_has_not_seen(
    policy_store: PolicyStore, ticks: ManualClock
) -> None:
    await policy_store.put_flag("other", Flag.boolean("f"))
    provider = AragoraFlagProvider(policy_store, monotonic=ticks)
    ctx = context("u", workspace_id="other")
    assert (
        provider.resolve_boolean_details("f", False, ctx).error_code == ErrorCode.PROVIDER_NOT_READY
    )
    await provider.ensure("other")
    assert provider.resolve_boolean_details("f", False, ctx).value is True


@pytest.mark.usefixtures("openfeature_api")
def test_an_openfeature_client_gets_the_workspace_values(provider: AragoraFlagProvider) -> None:
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_boolean_value("dark-mode", False, context("user-1")) is True
    assert client.get_string_value("colour", "none", context("user-1")) == "green"
    assert client.get_integer_value("max-batch", 1, context("user-1")) == 1000
    assert client.get_float_value("ratio", 0.0, context("user-1")) == 0.75
    assert client.get_object_value("limits", {}, context("u")) == {"cpu": 2, "tags": ["a"]}
    assert client.get_boolean_value("missing", True, context("user-1")) is True
    assert client.get_string_value("dark-mode", "x", context("user-1")) == "x"

    keys = [f"user-{n}" for n in range(1000)]
    on = [client.get_boolean_value("beta", False, context(key)) for key in keys]
    assert on == [Flag.boolean("beta", percent_on=30).evaluate(key).value for key in keys]
    details = client.get_boolean_details("beta", False, context("user-1"))
    assert details.reason == Reason.SPLIT and details.variant in {"on", "off"}

    # The workspace can also come from the global context, the key from the call.
    api.set_evaluation_context(EvaluationContext(attributes={"workspace_id": WS}))
    assert client.get_boolean_value("dark-mode", False, EvaluationContext("user-9")) is True
    assert api.get_provider_metadata().name == "aragora"
