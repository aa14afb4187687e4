"""Fixtures of the policy tests: the policy store on ``cp.store`` and hand-driven clocks."""

from __future__ import annotations

import pytest

from aragora.control_plane import ControlPlaneCoordinator
from aragora.policy import PolicyStore, create_policy_store


class ManualClock:
    """A clock that moves only when told: the engine's refresh or wall clock in tests."""

    def __init__(self, start_s: float = 1_000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def policy_store(cp: ControlPlaneCoordinator) -> PolicyStore:
    return create_policy_store(cp.store)


@pytest.fixture
def ticks() -> ManualClock:
    return ManualClock()
