"""Real processes for end-to-end tests: ``aragora serve`` servers, agents and CLI runs.

Servers listen on a free port, on an SQLite file in a temporary directory or on Redis
under a key prefix of their own; a test waits for ``/readyz``. Every server of one
test shares the test's ARAGORA_SECRET_KEY (tokens issued through one are known to all
on the same store) and, unless told otherwise, the admin token ``e2e-token`` of
workspace ``default`` (ARAGORA_ADMIN_TOKEN). Agents run with a token of role
``agent`` issued through the CLI (``aragora token create``).

Agents are ``aragora agent run tests/e2e/agents/scripted.py`` processes whose stdout
lines (``RAN ...``, ``STARTED ...``) are read by a thread into a queue, so a test
blocks on the next line with a deadline instead of polling.
"""

from __future__ import annotations

import base64
import json
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
ADMIN_TOKEN = "e2e-token"
_SERVER_ENV_DROPPED = (
    "ARAGORA_REDIS_URL",
    "ARAGORA_ADMIN_TOKEN",
    "ARAGORA_SECRET_KEY",
    "ARAGORA_DATA_DIR",
    "ARAGORA_TOKEN",
    "ARAGORA_URL",
)


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
    """A running ``aragora serve``; ``token`` is its admin token (``None`` when the
    server issued one itself: it is then in ``data_dir/admin.token``)."""

    url: str
    token: str | None
    proc: subprocess.Popen[str]
    log_path: Path
    data_dir: Path
    _role_tokens: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def client(self, token: str | None = None) -> ControlPlaneClient:
        """A client with ``token``, else the admin token."""
        return ControlPlaneClient(self.url, token or self.token)

    def role_token(self, role: str, workspace: str | None = None) -> str:
        """A token of ``role`` (in ``workspace``, default ``default``), issued once per
        server through ``aragora token create`` and then reused."""
        key = (role, workspace)
        if key not in self._role_tokens:
            args = ["token", "create", "--role", role, "--json"]
            if workspace is not None:
                args += ["--workspace", workspace]
            issued = run_cli(*args, server=self)
            assert issued.returncode == 0, issued.stderr
            self._role_tokens[key] = json.loads(issued.stdout)["token"]
        return self._role_tokens[key]

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
        self.secret_key = base64.b64encode(os.urandom(32)).decode("ascii")
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
        token: str | None = ADMIN_TOKEN,
        wait: bool = True,
        port: int | None = None,
        data_dir: Path | None = None,
        shared_secret: bool = True,
    ) -> ServerProc:
        """Start ``aragora serve``; by default on an SQLite file of its own.

        ``token`` is set as ARAGORA_ADMIN_TOKEN (``None``: unset, so the server issues
        one). ``shared_secret`` sets this test's ARAGORA_SECRET_KEY (else the server
        keeps a ``secret.key`` in its data directory).
        """
        port = port or free_port()
        data_dir = data_dir or self.tmp_path / f"data-{port}"
        args = [*CLI, "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if store is not None:
            args += ["--store", store]
        log_path, log = self._log_file(f"server-{port}")
        full_env = dict(os.environ)
        for name in _SERVER_ENV_DROPPED:
            full_env.pop(name, None)
        if token is not None:
            full_env["ARAGORA_ADMIN_TOKEN"] = token
        if shared_secret:
            full_env["ARAGORA_SECRET_KEY"] = self.secret_key
        full_env.update(env or {})
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, text=True)
        self._procs.append(proc)
        self._server_procs.append(proc)
        server = ServerProc(f"http://127.0.0.1:{port}", token, proc, log_path, data_dir)
        if wait:
            server.wait_ready()
        return server

    def stop(self, server: ServerProc) -> int:
        """Stop a server with SIGTERM (it drains gracefully) and return its exit status."""
        _stop(server.proc)
        return server.proc.returncode

    def agent(
        self,
        server: ServerProc | str,
        *,
        capabilities: Sequence[str] = (),
        agent_id: str | None = None,
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        target: str = f"{SCRIPTED_AGENT}:agent",
        token: str | None = None,
    ) -> AgentProc:
        """Start ``aragora agent run TARGET`` (the scripted agent) against ``server``
        with ``token``, by default the server's token of role ``agent`` (``server`` may
        also be the URL of a server that is not up yet: the admin token is used then)."""
        if isinstance(server, str):
            url, token = server, token or ADMIN_TOKEN
        else:
            url, token = server.url, token or server.role_token("agent")
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
    *args: str,
    server: ServerProc | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> CliResult:
    """Run ``aragora ARGS`` as a process, pointed at ``server`` when given, with
    ``token`` (default: the server's admin token) as ARAGORA_TOKEN."""
    full_env = dict(os.environ)
    for name in ("ARAGORA_URL", "ARAGORA_TOKEN", "ARAGORA_DATA_DIR"):
        full_env.pop(name, None)
    full_env.update(env or {})
    if server is not None:
        full_env["ARAGORA_URL"] = server.url
    chosen = token or (server.token if server is not None else None)
    if chosen is not None:
        full_env["ARAGORA_TOKEN"] = chosen
    done = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=45,
        check=False,
        cwd=cwd,
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
