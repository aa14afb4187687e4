"""Configuration: the design record's defaults, and every field settable from the environment."""

from __future__ import annotations

import dataclasses

import pytest

from aragora.control_plane import ConfigError, ControlPlaneConfig


def test_defaults_are_those_of_the_design_record() -> None:
    config = ControlPlaneConfig()
    assert config.redis_url == "redis://localhost:6379"
    assert config.key_prefix == "aragora:cp:"
    assert (config.heartbeat_timeout, config.heartbeat_interval) == (30.0, 10.0)
    assert (config.task_timeout, config.max_task_retries) == (300.0, 3)
    assert config.store_url is None
    assert config.result_ttl_s == 86_400.0


def test_from_env_reads_the_documented_variables() -> None:
    env = {
        "ARAGORA_REDIS_URL": "redis://cache:6380/2",
        "ARAGORA_STORE_URL": "sqlite:///state.db",
        "ARAGORA_KEY_PREFIX": "team:",
        "ARAGORA_HEARTBEAT_TIMEOUT": "12.5",
        "ARAGORA_HEARTBEAT_INTERVAL": "2",
        "ARAGORA_TASK_TIMEOUT": "60",
        "ARAGORA_MAX_TASK_RETRIES": "5",
        "ARAGORA_RESULT_TTL_S": "3600",
        "ARAGORA_REAP_INTERVAL_S": "",
    }
    config = ControlPlaneConfig.from_env(env)
    assert config.redis_url == "redis://cache:6380/2"
    assert config.store_url == "sqlite:///state.db"
    assert config.key_prefix == "team:"
    assert (config.heartbeat_timeout, config.heartbeat_interval) == (12.5, 2.0)
    assert (config.task_timeout, config.max_task_retries) == (60.0, 5)
    assert config.result_ttl_s == 3600.0
    assert config.reap_interval_s is None


def test_every_field_has_an_environment_variable() -> None:
    defaults = ControlPlaneConfig()
    for field in dataclasses.fields(ControlPlaneConfig):
        value = getattr(defaults, field.name)
        if value is None or isinstance(value, str):
            continue
        changed = value * 2 if field.name != "retry_jitter" else 0.25
        if field.name == "heartbeat_interval":
            changed = 1.0
        config = ControlPlaneConfig.from_env({f"ARAGORA_{field.name.upper()}": str(changed)})
        assert getattr(config, field.name) == changed, field.name


def test_overrides_win_over_the_environment() -> None:
    config = ControlPlaneConfig.from_env({"ARAGORA_TASK_TIMEOUT": "5"}, task_timeout=9.0)
    assert config.task_timeout == 9.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARAGORA_TASK_TIMEOUT": "soon"}, "ARAGORA_TASK_TIMEOUT"),
        ({"ARAGORA_MAX_TASK_RETRIES": "1.5"}, "ARAGORA_MAX_TASK_RETRIES"),
        ({"ARAGORA_HEARTBEAT_TIMEOUT": "-1"}, "heartbeat_timeout"),
        ({"ARAGORA_HEARTBEAT_INTERVAL": "40"}, "heartbeat_interval"),
        ({"ARAGORA_KEY_PREFIX": "a{b}"}, "key_prefix"),
        ({"ARAGORA_RETRY_JITTER": "2"}, "retry_jitter"),
        ({"ARAGORA_STORE_URL": "postgres://x"}, "store_url"),
    ],
)
def test_invalid_values_are_refused_with_the_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ControlPlaneConfig.from_env(env)
