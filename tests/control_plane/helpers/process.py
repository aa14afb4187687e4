"""Run ``worker.py`` as a child process and follow what it reports on stdout.

Every wait is bounded: a line that does not come within its deadline, or a worker
that exits early, fails the test with the worker's stderr in the message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

from aragora.control_plane import ControlPlaneConfig

WORKER_SCRIPT = Path(__file__).with_name("worker.py")


def config_env(config: ControlPlaneConfig) -> dict[str, str]:
    """The environment that makes ``ControlPlaneConfig.from_env`` rebuild ``config``
    (same store file or Redis key prefix, same timings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARAGORA_")}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is not None:
            env["ARAGORA_" + f.name.upper()] = str(value)
    rebuilt = ControlPlaneConfig.from_env(env)
    assert rebuilt == config, f"the environment does not carry the config: {rebuilt} != {config}"
    return env


class WorkerProcess:
    """One running worker; use ``async with`` so it is killed and reaped in any case."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.lines: list[str] = []

    @classmethod
    async def start(
        cls,
        config: ControlPlaneConfig,
        stderr_path: Path,
        *,
        agent: str,
        max_tasks: int = 1,
        count: int = 0,
        wait_s: float = 0.0,
        gate: bool = False,
        hold: bool = False,
    ) -> Self:
        """Start ``worker.py`` on the store of ``config`` (see its docstring for the options)."""
        args = ["--agent", agent, "--max", str(max_tasks), "--count", str(count)]
        args += ["--wait-s", str(wait_s)]
        args += ["--gate"] if gate else []
        args += ["--hold"] if hold else []
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER_SCRIPT),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=config_env(config),
            )
        return cls(proc, stderr_path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def next_line(self, timeout_s: float = 20.0) -> str | None:
        """The next line the worker prints, or None when it closed stdout (exited)."""
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"worker printed nothing for {timeout_s}s; stderr:\n{self._stderr()}"
            ) from None
        if not raw:
            return None
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def expect(self, word: str, timeout_s: float = 20.0) -> list[str]:
        """Read lines until one starts with ``word``; return that line's words."""
        while True:
            line = await self.next_line(timeout_s)
            if line is None:
                await self.proc.wait()
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}) before printing {word!r};"
                    f" it printed {self.lines}; stderr:\n{self._stderr()}"
                )
            words = line.split()
            if words and words[0] == word:
                return words

    async def expect_silence(self, duration_s: float) -> None:
        """Assert that the worker prints nothing for ``duration_s`` (it is blocked)."""
        assert self.proc.stdout is not None
        reading = asyncio.ensure_future(self.proc.stdout.readline())
        done, _ = await asyncio.wait({reading}, timeout=duration_s)
        if done:
            raise AssertionError(
                f"worker was expected to be blocked but printed {reading.result()!r}"
            )
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)

    async def send_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_exit(self, timeout_s: float = 20.0) -> int:
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"worker did not exit within {timeout_s}s") from None
        if code != 0:
            raise AssertionError(f"worker exited with {code}; stderr:\n{self._stderr()}")
        return code

    async def kill(self) -> int:
        """SIGKILL: the process gets no chance to clean up anything."""
        if self.proc.returncode is None:
            self.proc.kill()
        return await self.proc.wait()

    async def close(self) -> None:
        await self.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            await self.proc.stdout.read()
