"""Real processes for end-to-end tests: ``aragora serve`` servers, agents and CLI runs.

Servers listen on a free port with an admin token, on an SQLite file in a temporary
directory or on Redis under a key prefix of their own; a test waits for ``/readyz``.
Agents are ``aragora agent run tests/e2e/agents/scripted.py`` processes whose stdout
lines (``RAN ...``, ``STARTED ...``) are read by a thread into a queue, so a test
blocks on the next line with a deadline instead of polling.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest
import redis

from aragora.client import ControlPlaneClient

SCRIPTED_AGENT = Path(__file__).parent / "agents" / "scripted.py"
EXAMPLES = Path(__file__).parents[2] / "examples"
CLI = (sys.executable, "-m", "aragora.cli")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class ServerProc:
    """A running ``aragora serve``."""

    url: str
    token: str
    proc: subprocess.Popen[str]
    log_path: Path

    def client(self) -> ControlPlaneClient:
        return ControlPlaneClient(self.url, self.token)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Return once ``/readyz`` answers 200; fail with the log if the process died."""
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=1.0) as http:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    if http.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready within {START_TIMEOUT_S}s:\n{self.log()}")
                time.sleep(0.05)  # noqa: sleep-ok (waiting for a child process to listen)


@dataclass
class AgentProc:
    """A running scripted agent; ``lines`` receives its stdout, line by line."""

    agent_id: str
    proc: subprocess.Popen[str]
    log_path: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def expect(self, prefix: str, timeout_s: float = 20.0) -> str:
        """The next stdout line starting with ``prefix`` (earlier lines are kept in ``seen``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"agent {self.agent_id} printed no {prefix!r}:\n{self.log()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"agent {self.agent_id} ended before {prefix!r}:\n{self.log()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self) -> list[str]:
        """Every line printed so far, after the process has ended."""
        while True:
            line = self.lines.get(timeout=STOP_TIMEOUT_S)
            if line is None:
                return self.seen
            self.seen.append(line)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        _stop(self.proc, sig)
        return self.proc.returncode


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)
    stream.close()


class Processes:
    """Starts servers and agents for one test and stops them all at teardown."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self._procs: list[subprocess.Popen[str]] = []
        self._server_procs: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []
        self._logs: list[IO[str]] = []
        self._prefixes: list[str] = []

    def _log_file(self, name: str) -> tuple[Path, IO[str]]:
        path = self.tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.log"
        handle = path.open("w")
        self._logs.append(handle)
        return path, handle

    def redis_prefix(self) -> str:
        """A fresh key prefix; its keys are deleted at teardown."""
        prefix = f"aragora:e2e:{uuid.uuid4().hex[:12]}:"
        self._prefixes.append(prefix)
        return prefix

    def server(
        self,
        *,
        store: str | None = None,
        env: Mapping[str, str] | None = None,
        token: str = "e2e-token",
        wait: bool = True,
        port: int | None = None,
    ) -> ServerProc:
        """Start ``aragora serve``; by default on an SQLite file of its own."""
        port = port or free_port()
        data_dir = self.tmp_path / f"data-{port}"
        args = [*CLI, "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if store is not None:
            args += ["--store", store]
        log_path, log = self._log_file(f"server-{port}")
        full_env = {**os.environ, **(env or {}), "ARAGORA_ADMIN_TOKEN": token}
        full_env.pop("ARAGORA_REDIS_URL", None)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, text=True)
        self._procs.append(proc)
        self._server_procs.append(proc)
        server = ServerProc(f"http://127.0.0.1:{port}", token, proc, log_path)
        if wait:
            server.wait_ready()
        return server

    def agent(
        self,
        server: ServerProc | str,
        *,
        capabilities: Sequence[str] = (),
        agent_id: str | None = None,
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        target: str = f"{SCRIPTED_AGENT}:agent",
    ) -> AgentProc:
        """Start ``aragora agent run TARGET`` (the scripted agent) against ``server``
        (a server, or the URL of one that may not be up yet)."""
        url, token = (
            (server, "e2e-token") if isinstance(server, str) else (server.url, server.token)
        )
        agent_id = agent_id or f"agent-{uuid.uuid4().hex[:8]}"
        log_path, log = self._log_file(agent_id)
        full_env = {
            **os.environ,
            **(env or {}),
            "ARAGORA_URL": url,
            "ARAGORA_TOKEN": token,
            "SCRIPTED_AGENT_ID": agent_id,
            "SCRIPTED_CAPABILITIES": ",".join(capabilities),
            "SCRIPTED_CONCURRENCY": str(concurrency),
        }
        proc = subprocess.Popen(
            [*CLI, "agent", "run", target],
            stdout=subprocess.PIPE,
            stderr=log,
            env=full_env,
            text=True,
        )
        self._procs.append(proc)
        agent = AgentProc(agent_id, proc, log_path)
        assert proc.stdout is not None
        thread = threading.Thread(target=_pump, args=(proc.stdout, agent.lines), daemon=True)
        thread.start()
        self._threads.append(thread)
        return agent

    def close(self) -> None:
        # Agents first, so that they can still deregister from their servers.
        servers = {id(p) for p in self._server_procs}
        for proc in [p for p in self._procs if id(p) not in servers] + self._server_procs:
            _stop(proc)
        for thread in self._threads:
            thread.join(timeout=STOP_TIMEOUT_S)
        for handle in self._logs:
            handle.close()
        if self._prefixes:
            client = redis.Redis.from_url(self.redis_url)
            try:
                for prefix in self._prefixes:
                    keys = list(client.scan_iter(match=prefix + "*", count=1000))
                    if keys:
                        client.delete(*keys)
            finally:
                client.close()


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, server: ServerProc | None = None, env: Mapping[str, str] | None = None
) -> CliResult:
    """Run ``aragora ARGS`` as a process (pointed at ``server`` when given)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("ARAGORA_URL", None)
    full_env.pop("ARAGORA_TOKEN", None)
    if server is not None:
        full_env.update({"ARAGORA_URL": server.url, "ARAGORA_TOKEN": server.token})
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, timeout=45, check=False
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def procs(tmp_path: Path, redis_url: str) -> Iterator[Processes]:
    """Processes of one test, stopped at its end."""
    processes = Processes(tmp_path, redis_url)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture(scope="module")
def shared_procs(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Processes]:
    """Processes shared by the tests of a module (tests keep apart by capability)."""
    processes = Processes(tmp_path_factory.mktemp("shared"), redis_url)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture(scope="module")
def shared_server(shared_procs: Processes) -> ServerProc:
    """One SQLite-backed server for the tests of a module that need no special settings."""
    return shared_procs.server()


def unique(name: str) -> str:
    """A capability (or task label) no other test uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"
