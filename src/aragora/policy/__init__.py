"""Policy: access rules (Cedar), rate limits and feature flags for every workspace.

``PolicyEngine`` (engine.py) answers "may this principal do this" from the role grants
of ``aragora.tenancy.models`` narrowed by each workspace's Cedar rules;
``RateLimiter`` (ratelimit.py) counts hits atomically in the store;
``AragoraFlagProvider`` (provider.py) serves workspace feature flags to OpenFeature.
Rules and flags persist through ``PolicyStore`` (store.py) on Redis or SQLite.
Budgets are not here: the task store reserves and settles them.
"""

from aragora.policy.engine import CacheStats, PolicyEngine
from aragora.policy.flags import Flag, FlagStore, rollout_bucket
from aragora.policy.models import Decision, Rule
from aragora.policy.provider import AragoraFlagProvider
from aragora.policy.ratelimit import RateDecision, RateLimiter, create_rate_limiter
from aragora.policy.store import (
    FlagNotFoundError,
    PolicyStore,
    RuleNotFoundError,
    create_policy_store,
)

__all__ = [
    "AragoraFlagProvider",
    "CacheStats",
    "Decision",
    "Flag",
    "FlagNotFoundError",
    "FlagStore",
    "PolicyEngine",
    "PolicyStore",
    "RateDecision",
    "RateLimiter",
    "Rule",
    "RuleNotFoundError",
    "create_policy_store",
    "create_rate_limiter",
    "rollout_bucket",
]
