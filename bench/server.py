"""An ``aragora serve`` child process for the HTTP benchmarks, and CPU readings.

``ServerProcess`` starts the server on a free loopback port with a random admin token
(``ARAGORA_ADMIN_TOKEN``), on the embedded SQLite store in a directory of the run or
on Redis under a key prefix of its own, and stops it at the end. ``process_cpu_s`` and
``redis_cpu_s`` read the CPU time a process or the Redis server has used so far, so
that a benchmark can charge each its share of a measured interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import redis.asyncio as aioredis

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
READY_POLL_S = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, in seconds) process ``pid`` has used, from /proc; None
    when it cannot be read (no such process, or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU time (user + system) of this process so far."""
    times = os.times()
    return times.user + times.system


async def redis_cpu_s(client: Any) -> float | None:
    """CPU seconds (user + system) the Redis server has used since it started, from
    ``INFO cpu`` (server-wide: every client of the server counts); None on error."""
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    except Exception:
        return None


class ServerProcess:
    """``aragora serve`` as a child process; use ``async with``.

    ``store_url`` None runs the embedded SQLite store in ``data_dir``; a Redis URL runs
    on that server under ``key_prefix`` (a fresh one when not given). ``url`` and
    ``token`` (the admin token of workspace "default") are what a client needs.
    """

    def __init__(
        self, data_dir: Path, store_url: str | None = None, key_prefix: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.store_url = store_url
        self.key_prefix = key_prefix or f"aragora:bench:{uuid.uuid4().hex[:8]}:"
        self.token = "bench-admin-token-" + uuid.uuid4().hex
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    def cpu_s(self) -> float | None:
        """CPU seconds the server process has used so far."""
        return None if self._proc is None else process_cpu_s(self._proc.pid)

    async def start(self) -> None:
        """Start the server and wait until ``GET /readyz`` answers 200."""
        env = {
            **os.environ,
            "ARAGORA_ADMIN_TOKEN": self.token,
            "ARAGORA_DATA_DIR": str(self.data_dir),
        }
        command = [sys.executable, "-m", "aragora.cli", "serve", "--port", str(self.port)]
        if self.store_url is not None:
            env["ARAGORA_KEY_PREFIX"] = self.key_prefix
            command += ["--store", self.store_url]
        self._proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"aragora serve exited with {self._proc.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                await asyncio.sleep(READY_POLL_S)  # waiting for a child process to listen
        raise RuntimeError(f"aragora serve did not become ready within {START_TIMEOUT_S:g}s")

    async def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class RedisServerProcess:
    """A private ``redis-server`` child process (no persistence) on a free loopback
    port, so that its CPU and memory figures hold only what a benchmark puts on it;
    use ``async with``. ``url`` has no database number."""

    def __init__(self, data_dir: Path, executable: str = "redis-server") -> None:
        self.data_dir = data_dir
        self.executable = executable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
                try:
                    await client.ping()
                    return self
                except Exception:
                    if time.monotonic() > deadline:
                        await self.__aexit__(None, None, None)
                        raise RuntimeError("redis-server did not answer PING") from None
                    await asyncio.sleep(READY_POLL_S)  # waiting for a child process to listen
        finally:
            await client.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
