"""Errors raised by the HTTP layer itself, as branches of the control plane's one tree.

The handlers of :mod:`aragora.server.problems` turn them into problem+json answers::

    ControlPlaneError
    ├── ForbiddenError       403 forbidden: the role or a workspace rule denies the request,
    │                        or the caller may not act as the agent it names
    └── RateLimitedError     429 rate-limited: a per-minute limit is used up for now
"""

from __future__ import annotations

from typing import Literal

from aragora.control_plane.errors import ControlPlaneError

RateScope = Literal["workspace", "token"]


class ForbiddenError(ControlPlaneError):
    """The caller is known but may not do this; ``reason`` says why (safe to show).

    ``rule_ids`` names the workspace rules that denied the request, if any.
    """

    def __init__(self, reason: str, rule_ids: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule_ids = rule_ids


class RateLimitedError(ControlPlaneError):
    """A rate limit refused the request; retrying after ``retry_after_s`` may pass.

    ``quota`` names the workspace quota that sets the limit (``max_submits_per_minute``)
    and ``scope`` whether the workspace's count or the calling token's ran out.
    """

    def __init__(self, quota: str, limit: int, retry_after_s: float, scope: RateScope) -> None:
        super().__init__(
            f"rate limit {quota} of the {scope} reached: at most {limit} per minute; "
            f"retry after {retry_after_s:.3g} s"
        )
        self.quota = quota
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.scope: RateScope = scope
