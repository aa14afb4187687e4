"""In-process caching of hot reads, with the store as the source of truth.

* :mod:`.ttl`: :class:`TTLCache`, entries kept for a short time and dropped on demand;
* :mod:`.bus`: :class:`InvalidationBus`, which tells every instance of a deployment
  to drop an entry after a write (Redis pub/sub, or this process only on SQLite).

See ``docs/operations.md`` (Caching) for what is cached and how to tune it.
"""

from aragora.cache.bus import (
    InvalidationBus,
    InvalidationHandler,
    LocalInvalidationBus,
    RedisInvalidationBus,
    create_invalidation_bus,
)
from aragora.cache.ttl import TTLCache

__all__ = [
    "InvalidationBus",
    "InvalidationHandler",
    "LocalInvalidationBus",
    "RedisInvalidationBus",
    "TTLCache",
    "create_invalidation_bus",
]
