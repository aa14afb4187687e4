"""Configuration of a control plane deployment.

The first six fields and their defaults are those of the design record (ADR-009) and
keep their names; every other field carries its unit in its name. Every field can be
set from the environment as ``ARAGORA_<FIELD>`` (see :meth:`ControlPlaneConfig.from_env`).
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from aragora.control_plane.errors import ConfigError

ENV_PREFIX = "ARAGORA_"
STORE_URL_SCHEMES = (
    "sqlite://",
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
)
"""The URL schemes ``store_url`` accepts (the last two select a Redis Cluster)."""


@dataclass(frozen=True, slots=True)
class ControlPlaneConfig:
    """Settings shared by the coordinator, its stores and the server.

    ``store_url`` chooses the store: ``None`` means Redis at ``redis_url``;
    ``sqlite:///PATH`` means the embedded SQLite store in the file PATH;
    ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (or ``rediss+cluster://``, with TLS)
    means a Redis Cluster reached through any of the listed nodes.
    """

    redis_url: str = "redis://localhost:6379"
    key_prefix: str = "aragora:cp:"
    heartbeat_timeout: float = 30.0
    heartbeat_interval: float = 10.0
    task_timeout: float = 300.0
    max_task_retries: int = 3

    store_url: str | None = None
    retry_backoff_base_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    retry_jitter: float = 0.5
    result_ttl_s: float = 86_400.0
    reap_interval_s: float | None = None
    max_payload_bytes: int = 1_048_576
    breaker_window_s: float = 60.0
    breaker_min_calls: int = 5
    breaker_error_rate: float = 0.5
    breaker_open_s: float = 30.0
    breaker_half_open_max_calls: int = 2
    redis_max_connections: int = 64
    sqlite_busy_timeout_s: float = 30.0
    cache_ttl_s: float = 2.0
    loop_backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        positive = (
            "heartbeat_timeout",
            "heartbeat_interval",
            "task_timeout",
            "retry_backoff_base_s",
            "retry_backoff_max_s",
            "result_ttl_s",
            "max_payload_bytes",
            "breaker_window_s",
            "breaker_min_calls",
            "breaker_open_s",
            "breaker_half_open_max_calls",
            "redis_max_connections",
            "sqlite_busy_timeout_s",
            "loop_backoff_max_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be greater than 0")
        if self.cache_ttl_s < 0:
            raise ConfigError("cache_ttl_s must be 0 (no caching) or more")
        if self.max_task_retries < 0:
            raise ConfigError("max_task_retries must be 0 or more")
        if self.reap_interval_s is not None and self.reap_interval_s <= 0:
            raise ConfigError("reap_interval_s must be greater than 0")
        if not 0.0 <= self.retry_jitter <= 1.0:
            raise ConfigError("retry_jitter must be between 0 and 1")
        if not 0.0 < self.breaker_error_rate <= 1.0:
            raise ConfigError("breaker_error_rate must be in (0, 1]")
        if self.heartbeat_interval >= self.heartbeat_timeout:
            raise ConfigError("heartbeat_interval must be shorter than heartbeat_timeout")
        if any(c in self.key_prefix for c in "{}") or not self.key_prefix:
            raise ConfigError("key_prefix must be non-empty and hold no '{' or '}'")
        if self.store_url is not None and not self.store_url.startswith(STORE_URL_SCHEMES):
            raise ConfigError(
                "store_url must start with sqlite://, redis://, rediss://, unix://,"
                " redis+cluster:// or rediss+cluster://"
            )

    @property
    def effective_reap_interval_s(self) -> float:
        """How often each coordinator reaps: never less often than every heartbeat interval."""
        return self.reap_interval_s or self.heartbeat_interval

    @property
    def effective_store_url(self) -> str:
        return self.store_url or self.redis_url

    def replace(self, **changes: Any) -> ControlPlaneConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ControlPlaneConfig:
        """Read ``ARAGORA_<FIELD>`` for every field (e.g. ``ARAGORA_TASK_TIMEOUT``).

        Unset variables keep the default; ``overrides`` win over the environment.
        """
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse_env_value(f.name, raw, hints[f.name])
        values.update(overrides)
        return cls(**values)


def _parse_env_value(name: str, raw: str, hint: Any) -> Any:
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        hint = args[0]
    if optional and raw.strip() == "":
        return None
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {hint.__name__}"
        ) from None
    return raw
