"""Stores behind one interface: Redis (distributed) and SQLite (embedded)."""

from __future__ import annotations

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import ConfigError
from aragora.store.base import ClaimOutcome, NewTask, Store, TaskPage

__all__ = ["ClaimOutcome", "NewTask", "Store", "TaskPage", "create_store", "sqlite_path_from_url"]


def sqlite_path_from_url(url: str) -> str:
    """``sqlite:///relative/state.db`` or ``sqlite:////absolute/state.db`` to a file path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"SQLite store URL must look like sqlite:///PATH, got {url!r}")
    return url[len(prefix) :]


def create_store(config: ControlPlaneConfig) -> Store:
    """Pick the store from ``config.store_url`` (``None`` means Redis at ``redis_url``).

    ``sqlite:///PATH`` is the embedded store; ``redis://``, ``rediss://`` and ``unix://``
    a single Redis server; ``redis+cluster://`` and ``rediss+cluster://`` a Redis Cluster.
    """
    url = config.effective_store_url
    if url.startswith("sqlite:"):
        from aragora.store.sqlite import SqliteStore

        return SqliteStore(config, sqlite_path_from_url(url))
    from aragora.store.redis import RedisStore

    return RedisStore(config, url)
