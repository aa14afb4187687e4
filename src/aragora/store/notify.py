"""In-process fan-out of store notifications to waiting coroutines.

A store feeds this hub from wherever it learns of changes (Redis pub/sub, or local
commits and a change check for SQLite). Waiters register *before* they read the
state they wait on, so a notification that lands between the read and the wait is
not lost: each watch keeps a sticky flag until it is consumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class Watch:
    """One waiter's view of a channel; ``wait`` returns True when it was notified."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a notification; clears it so the next wait waits again."""
        if not self._event.is_set():
            if timeout_s <= 0:
                return False
            try:
                await asyncio.wait_for(self._event.wait(), timeout_s)
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

    def notify(self, channel: Hashable) -> None:
        for watch in self._watches.get(channel, ()):
            watch.notify()

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
