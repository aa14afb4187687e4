"""Pure scheduling rules shared by the stores.

The SQLite store calls these inside its transactions; the Redis Lua scripts mirror
them line for line (``lua/_rules.lua``). Keep both in step: the contract suite runs
the same expectations against each store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.models import AgentStatus, BreakerState

BREAKER_BUCKETS = 10


def retry_delay_s(attempt: int, config: ControlPlaneConfig, random_unit: float) -> float:
    """Backoff before the retry that follows failed attempt number ``attempt`` (1-based).

    Exponential (base * 2^(attempt-1)) capped at ``retry_backoff_max_s``; the jitter
    takes away up to ``retry_jitter`` of it: delay * (1 - jitter * random_unit).
    """
    exponent = min(max(attempt - 1, 0), 62)
    delay = min(config.retry_backoff_max_s, config.retry_backoff_base_s * (2.0**exponent))
    return delay * (1.0 - config.retry_jitter * random_unit)


def budget_period_key(now: float, period: str) -> str:
    """``d<days since epoch>`` for a UTC day, ``m<YYYYMM>`` for a UTC month."""
    if period == "daily":
        return f"d{math.floor(now / 86400)}"
    moment = datetime.fromtimestamp(now, UTC)
    return f"m{moment.year:04d}{moment.month:02d}"


def agent_status(offline: bool, draining: bool, running: int) -> AgentStatus:
    if offline:
        return AgentStatus.OFFLINE
    if draining:
        return AgentStatus.DRAINING
    return AgentStatus.BUSY if running > 0 else AgentStatus.IDLE


@dataclass(slots=True)
class BreakerRecord:
    """Stored state of one agent's circuit breaker."""

    state: BreakerState = BreakerState.CLOSED
    opened_at: float | None = None
    half_open_in_flight: int = 0
    half_open_successes: int = 0
    buckets: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (calls, failures)

    def window(self, now: float, config: ControlPlaneConfig) -> tuple[int, int]:
        """(calls, failures) within the rolling window ending at ``now``."""
        current = _bucket(now, config)
        calls = failures = 0
        for index, (c, f) in self.buckets.items():
            if index > current - BREAKER_BUCKETS:
                calls += c
                failures += f
        return calls, failures


def _bucket(now: float, config: ControlPlaneConfig) -> int:
    return math.floor(now / (config.breaker_window_s / BREAKER_BUCKETS))


def breaker_admit(record: BreakerRecord, now: float, config: ControlPlaneConfig) -> bool:
    """May the agent take a task now? Moves OPEN to HALF_OPEN after the cool-down and
    counts an admitted half-open trial. Mutates ``record``."""
    if record.state is BreakerState.OPEN:
        if record.opened_at is not None and now < record.opened_at + config.breaker_open_s:
            return False
        record.state = BreakerState.HALF_OPEN
        record.half_open_in_flight = 0
        record.half_open_successes = 0
    if record.state is BreakerState.HALF_OPEN:
        if record.half_open_in_flight >= config.breaker_half_open_max_calls:
            return False
        record.half_open_in_flight += 1
    return True


def breaker_peek(record: BreakerRecord, now: float, config: ControlPlaneConfig) -> bool:
    """Would ``breaker_admit`` admit? Does not change anything."""
    if record.state is BreakerState.OPEN:
        return record.opened_at is None or now >= record.opened_at + config.breaker_open_s
    if record.state is BreakerState.HALF_OPEN:
        return record.half_open_in_flight < config.breaker_half_open_max_calls
    return True


def breaker_record(record: BreakerRecord, ok: bool, now: float, config: ControlPlaneConfig) -> None:
    """Record the outcome of one attempt of the agent. Mutates ``record``."""
    current = _bucket(now, config)
    record.buckets = {i: cf for i, cf in record.buckets.items() if i > current - BREAKER_BUCKETS}
    calls, failures = record.buckets.get(current, (0, 0))
    record.buckets[current] = (calls + 1, failures + (0 if ok else 1))

    if record.state is BreakerState.HALF_OPEN:
        record.half_open_in_flight = max(record.half_open_in_flight - 1, 0)
        if not ok:
            _open(record, now)
        else:
            record.half_open_successes += 1
            if record.half_open_successes >= config.breaker_half_open_max_calls:
                record.state = BreakerState.CLOSED
                record.opened_at = None
                record.half_open_in_flight = 0
                record.half_open_successes = 0
                record.buckets = {}
        return
    if record.state is BreakerState.CLOSED:
        calls, failures = record.window(now, config)
        if calls >= config.breaker_min_calls and failures / calls >= config.breaker_error_rate:
            _open(record, now)


def breaker_release(record: BreakerRecord) -> None:
    """An admitted half-open trial ended without an outcome (e.g. cancelled)."""
    if record.state is BreakerState.HALF_OPEN:
        record.half_open_in_flight = max(record.half_open_in_flight - 1, 0)


def _open(record: BreakerRecord, now: float) -> None:
    record.state = BreakerState.OPEN
    record.opened_at = now
    record.half_open_in_flight = 0
    record.half_open_successes = 0
