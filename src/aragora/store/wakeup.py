"""Prompt wake-ups between processes that share one SQLite file on one machine.

Each listening store binds a Unix datagram socket in Linux's abstract namespace (no file,
no path length limit, gone with its process) and registers its name as an empty file in
a directory next to the database (``<db>-wake/``). After a commit that may interest
others, a store sends one empty datagram to every registered name but its own: the
receivers wake their waiters, which then read the state again. A name nobody listens
on any more (a process that died) refuses the datagram and is unregistered.

A wake-up carries no data and proves nothing: it only makes the receiver look sooner.
Datagrams can be lost (a full socket buffer, another network namespace), so the store
keeps polling ``PRAGMA data_version`` as well, at a longer interval. Where abstract
sockets do not exist (not Linux) ``LocalWakeup.open`` returns ``None`` and only the
poll remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

RESCAN_EVERY_S = 1.0
"""How often a ringer re-reads the directory even when its mtime did not change."""


class LocalWakeup:
    """One store object's wake-up socket and its view of the others'."""

    def __init__(self, directory: str, prefix: str, name: str, sock: socket.socket) -> None:
        self._directory = directory
        self._prefix = prefix
        self.name = name
        self._sock = sock
        self._peers: list[str] = []
        self._seen_mtime_ns = -1
        self._scanned_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(cls, db_path: str) -> LocalWakeup | None:
        """Bind and register a socket for the database at ``db_path``; ``None`` when
        this platform or directory does not allow it (the caller then only polls)."""
        if not sys.platform.startswith("linux"):
            return None
        real = os.path.realpath(db_path)
        prefix = "aragora-wake-" + hashlib.sha256(real.encode()).hexdigest()[:24] + "-"
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        directory = real + "-wake"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind("\0" + prefix + name)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            with open(os.path.join(directory, name), "x"):
                pass
        except OSError as exc:
            sock.close()
            logger.info("no cross-process wake-ups for %s (%s); polling only", db_path, exc)
            return None
        return cls(directory, prefix, name, sock)

    def listen(self, on_wake: Callable[[], None]) -> None:
        """Call ``on_wake`` on the running loop whenever datagrams arrive."""
        loop = asyncio.get_running_loop()
        self._loop = loop

        def readable() -> None:
            while True:
                try:
                    self._sock.recv(64)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
            on_wake()

        loop.add_reader(self._sock.fileno(), readable)

    def ring(self) -> None:
        """Wake every other registered listener (never blocks; losses are tolerated)."""
        for peer in self._current_peers():
            try:
                self._sock.sendto(b"", "\0" + self._prefix + peer)
            except (BlockingIOError, InterruptedError):
                continue  # its buffer is full: it has wake-ups pending anyway
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(peer)
            except OSError:
                continue

    def _current_peers(self) -> list[str]:
        try:
            stat = os.stat(self._directory)
        except OSError:
            return []
        now = time.monotonic()
        if stat.st_mtime_ns != self._seen_mtime_ns or now - self._scanned_at > RESCAN_EVERY_S:
            self._seen_mtime_ns = stat.st_mtime_ns
            self._scanned_at = now
            try:
                self._peers = [e for e in os.listdir(self._directory) if e != self.name]
            except OSError:
                self._peers = []
        return self._peers

    def _forget(self, peer: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._directory, peer))
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)

    def close(self) -> None:
        """Stop listening and unregister. Idempotent."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock.fileno())
        self._loop = None
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._directory, self.name))
        self._sock.close()
