"""The real processes of a run, all on loopback: Redis, the proxy, servers and agents.

Every process is started from the harness's main thread with a parent-death signal
(Linux), so none outlives the harness even when the harness itself is killed. Logs go
to files in the run's work directory, opened in append mode so restarts add to them.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx
import redis
import redis.asyncio as aioredis

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class ProcessStartError(RuntimeError):
    """A process of the run did not come up in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _tail(path: Path, chars: int = 2_000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class ManagedProcess:
    """One restartable child process with its log file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stopped = False  # SIGSTOPped right now
        self._term_sent = False  # a second SIGTERM would cut an agent's drain short

    def _spawn(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        log: IO[bytes] = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
                cwd=REPO_ROOT,
                preexec_fn=_die_with_parent,  # spawned from the main thread only
            )
        finally:
            log.close()
        self.starts += 1
        self.stopped = False
        self._term_sent = False

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            if sig is signal.SIGSTOP:
                self.stopped = True
            elif sig is signal.SIGCONT:
                self.stopped = False

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.stopped = False

    def request_stop(self) -> None:
        """SIGTERM (after SIGCONT if stopped) without waiting; see ``terminate``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.stopped:
            self.signal(signal.SIGCONT)
        self.proc.terminate()
        self._term_sent = True

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (after SIGCONT if stopped), SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if not self._term_sent:
            self.request_stop()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def failure(self, what: str) -> ProcessStartError:
        return ProcessStartError(f"{self.name}: {what}\n{_tail(self.log_path)}")


class RedisProcess(ManagedProcess):
    """``redis-server`` on a free port, AOF on with ``appendfsync always``."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir / "redis.log")
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ProcessStartError("redis-server is not on PATH")
        self._spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ]
        )

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until PING answers (the AOF is loaded by then)."""
        deadline = time.monotonic() + timeout_s
        client = aioredis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            while True:
                if not self.alive():
                    raise self.failure("exited")
                try:
                    if await client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise self.failure(f"not ready within {timeout_s}s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()


class ProxyProcess(ManagedProcess):
    """``python -m chaos.proxy`` between the servers and Redis."""

    def __init__(self, workdir: Path, upstream_port: int) -> None:
        super().__init__("proxy", workdir / "proxy.log")
        self.port = free_port()
        self.upstream_port = upstream_port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._spawn(
            [
                sys.executable,
                "-m",
                "chaos.proxy",
                "--listen",
                str(self.port),
                "--upstream",
                str(self.upstream_port),
            ],
            env=child_env(),
        )

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while f"READY {self.port}" not in _tail(self.log_path):
            if not self.alive():
                raise self.failure("exited")
            if time.monotonic() > deadline:
                raise self.failure(f"not ready within {timeout_s}s")
            await asyncio.sleep(0.05)

    def cut(self) -> None:
        self.signal(signal.SIGUSR1)

    def restore(self) -> None:
        self.signal(signal.SIGUSR2)


class ServerProcess(ManagedProcess):
    """``aragora serve`` on a fixed port (kept across restarts) over the proxy."""

    def __init__(self, index: int, workdir: Path, store_url: str, env: Mapping[str, str]):
        super().__init__(f"server-{index}", workdir / f"server-{index}.log")
        self.index = index
        self.port = free_port()
        self.store_url = store_url
        self.data_dir = workdir / f"server-{index}"
        self.env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._spawn(
            [
                sys.executable,
                "-m",
                "aragora.cli",
                "serve",
                "--port",
                str(self.port),
                "--store",
                self.store_url,
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
            ],
            env=self.env,
        )

    async def is_ready(self, http: httpx.AsyncClient) -> bool:
        try:
            return (await http.get(f"{self.url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not await self.is_ready(http):
                if not self.alive():
                    raise self.failure("exited")
                if time.monotonic() > deadline:
                    raise self.failure(f"not ready within {timeout_s}s")
                await asyncio.sleep(0.05)


class AgentProcess(ManagedProcess):
    """``python -m chaos.worker`` with a fixed agent id (kept across restarts)."""

    def __init__(self, agent_id: str, workdir: Path, env: Mapping[str, str]) -> None:
        super().__init__(agent_id, workdir / f"{agent_id}.log")
        self.agent_id = agent_id
        self.exec_log = workdir / f"{agent_id}.exec.jsonl"
        self.env = {**env, "CHAOS_AGENT_ID": agent_id, "CHAOS_LOG": str(self.exec_log)}

    def start(self) -> None:
        self._spawn([sys.executable, "-m", "chaos.worker"], env=self.env)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, minus aragora settings, plus the repository on
    the import path (so ``-m chaos.*`` works from anywhere) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARAGORA_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env
