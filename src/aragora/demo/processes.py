"""Child processes of the demo: one ``aragora serve`` and the example agents.

Each child runs in a process group of its own, so a Ctrl-C in the terminal reaches
only the demo, which then stops the children in order (agents drain first, then the
server). Their output goes to a log file in the demo's data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from aragora.client import ServerUnreachableError

READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.1
LOG_TAIL_LINES = 20


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class ChildProcess:
    """A child process with its output in ``log_path``; stop it with :meth:`stop`."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.env = dict(env)
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def start(self) -> None:
        """Start the process in a new process group, its output appended to the log."""
        self._log = self.log_path.open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            process_group=0,
        )

    def send_signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    async def wait(self, timeout_s: float | None = None) -> int | None:
        """The exit status, or None when still running after ``timeout_s``."""
        if self._proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._proc.wait(), timeout_s)
        return None

    async def stop(
        self,
        sig: signal.Signals,
        timeout_s: float,
        hurry: asyncio.Event | None = None,
    ) -> int | None:
        """Send ``sig`` and wait up to ``timeout_s`` for the exit, then kill.

        When ``hurry`` is set meanwhile, ``sig`` is sent once more (an agent then skips
        the rest of its drain grace period).
        """
        if self._proc is None:
            return None
        self.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        hurried = False
        while self._proc.returncode is None:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                self.kill()
                break
            waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self._proc.wait())}
            if hurry is not None and not hurried:
                waits.add(asyncio.ensure_future(hurry.wait()))
            _, pending = await asyncio.wait(
                waits, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED
            )
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if hurry is not None and hurry.is_set() and not hurried:
                hurried = True
                self.send_signal(sig)
        await self._proc.wait()
        self._close_log()
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL the process (the last resort of :meth:`stop`)."""
        self.send_signal(signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log, to explain a failed start."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def wait_until_ready(
    server: ChildProcess, url: str, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Return once ``url``/readyz answers 200; ``ServerUnreachableError`` with the server's
    last log lines when it exits or is not ready within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as http:
        while True:
            if not server.running:
                raise ServerUnreachableError(
                    url, f"the server exited with status {server.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ServerUnreachableError(
                    url, f"the server was not ready within {timeout_s:g}s:\n{server.log_tail()}"
                )
            await asyncio.sleep(READY_POLL_S)


def child_env(extra: Mapping[str, str], drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment without ``drop``, with ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env
