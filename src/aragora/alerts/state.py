"""Where alert states live: one compare-and-set per transition, on Redis or SQLite.

Many instances evaluate the same rules against the same store. Each transition of an
alert (absent or resolved -> firing, firing -> resolved) is one atomic step that
succeeds only if the alert is not already in the target state, so exactly one instance
wins it and sends its notification: an alert fires once and resolves once per incident
however many engines run. A transition also carries ``observed_at``, the store time at
which its evaluator began reading; one observed before the alert's last transition is
refused, so an evaluator that read old facts slowly never undoes a newer transition.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from aragora.alerts.models import AlertRecord, Condition
from aragora.control_plane.errors import ConfigError

if TYPE_CHECKING:
    from aragora.store.base import Store


class AlertStateStore(abc.ABC):
    """The firing/resolved state of every alert of a deployment."""

    @abc.abstractmethod
    async def fire(
        self, condition: Condition, *, observed_at: float, one_shot: bool, retention_s: float
    ) -> AlertRecord | None:
        """Make the alert firing unless it is already (or the facts are stale): the new
        record if this call did it, else ``None``. An event alert (``one_shot``) is
        forgotten ``retention_s`` after it fired and cannot fire again meanwhile."""

    @abc.abstractmethod
    async def resolve(
        self, key: str, *, observed_at: float, retention_s: float
    ) -> AlertRecord | None:
        """Make a firing condition alert resolved: the record if this call did it, else
        ``None`` (not firing, or stale facts). Forgotten ``retention_s`` later."""

    @abc.abstractmethod
    async def list_firing(self) -> list[AlertRecord]:
        """Every firing condition alert (event alerts are not listed), by key."""

    @abc.abstractmethod
    async def get(self, key: str) -> AlertRecord | None:
        """The alert's state, or ``None`` if it never fired or was forgotten."""


def create_alert_state_store(store: Store) -> AlertStateStore:
    """The alert states kept in the same place as ``store`` (Redis or SQLite)."""
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

    if isinstance(store, RedisStore):
        from aragora.alerts.redis_state import RedisAlertStateStore

        return RedisAlertStateStore(store)
    if isinstance(store, SqliteStore):
        from aragora.alerts.sqlite_state import SqliteAlertStateStore

        return SqliteAlertStateStore(store)
    raise ConfigError(f"no alert state store for {type(store).__name__}")
