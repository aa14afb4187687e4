"""In-process fan-out of store notifications to waiting coroutines.

A store feeds this hub from wherever it learns of changes (Redis pub/sub, or local
commits and a change check for SQLite). Waiters register *before* they read the
state they wait on, so a notification that lands between the read and the wait is
not lost: each watch keeps a sticky flag until it is consumed.

A notification may carry a value (a store attaches the terminal ``Task`` to a task
channel's notification when it has it at hand), which saves the waiter a read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any


class Watch:
    """One waiter's view of a channel; ``wait`` returns True when it was notified."""

    __slots__ = ("_event", "_value")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._value: Any = None

    def notify(self, value: Any = None) -> None:
        """Wake the waiter; ``value`` (if any) is kept for ``take_value``."""
        self._value = value
        self._event.set()

    def take_value(self) -> Any:
        """The value the latest notification carried (None if none), forgetting it."""
        value, self._value = self._value, None
        return value

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a notification; clears it so the next wait waits again."""
        if not self._event.is_set():
            if timeout_s <= 0:
                return False
            try:
                async with asyncio.timeout(timeout_s):
                    await self._event.wait()
            except TimeoutError:
                return False
        self._event.clear()
        return True


class NotificationHub:
    """Maps channels (any hashable key) to the watches waiting on them."""

    def __init__(self) -> None:
        self._watches: dict[Hashable, set[Watch]] = {}

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._watches.values())

    @asynccontextmanager
    async def watch(self, channel: Hashable) -> AsyncIterator[Watch]:
        watch = Watch()
        self._watches.setdefault(channel, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(channel)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[channel]

    def has_watchers(self, channel: Hashable) -> bool:
        """Whether anyone waits on ``channel`` (to skip decoding what nobody reads)."""
        return channel in self._watches

    def notify(self, channel: Hashable, value: Any = None) -> None:
        for watch in self._watches.get(channel, ()):
            watch.notify(value)

    def notify_all(self) -> None:
        """Wake every waiter, e.g. after a reconnect during which messages may have been missed."""
        for watches in self._watches.values():
            for watch in watches:
                watch.notify()


def ready_channel(workspace_id: str) -> tuple[str, str]:
    """Channel woken when a task of the workspace may have become claimable."""
    return ("ready", workspace_id)


def task_channel(workspace_id: str, task_id: str) -> tuple[str, str, str]:
    """Channel woken when a task reached a terminal state."""
    return ("done", workspace_id, task_id)
