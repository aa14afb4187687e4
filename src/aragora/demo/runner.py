"""``aragora demo``: an embedded server, three example agents and a stream of tasks.

The demo starts ``aragora serve`` on an SQLite store in a data directory (a temporary
one unless given), issues a sign-in token for the dashboard and one agent token per
example agent, starts ``examples/summarizer_agent.py``, ``examples/coder_agent.py``
and ``examples/flaky_agent.py`` as processes of their own, submits tasks of mixed
types and priorities at a set rate, and shows what happens. The flaky agent fails in
spells, so retries and its circuit breaker show within seconds: the server runs with a
short breaker window and cool-down (:data:`SERVER_TUNING`, each overridable through
its environment variable).

SIGINT (Ctrl-C) or SIGTERM stops it: the task stream stops, the agents drain (finish
what they hold and deregister), the server shuts down, and the demo exits 0. A second
signal cuts the agents' drain short. ``duration_s`` stops it by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live

from aragora.client import AsyncControlPlaneClient
from aragora.control_plane.errors import ConfigError, ControlPlaneError
from aragora.control_plane.models import AgentStatus
from aragora.demo.monitor import BreakerWatch, Monitor, Snapshot
from aragora.demo.processes import ChildProcess, child_env, free_port, wait_until_ready
from aragora.demo.traffic import TaskStream
from aragora.demo.view import Banner, banner_lines, render, status_line, summary_line
from aragora.tenancy.keyfiles import write_token_file
from aragora.tenancy.models import Role
from aragora.tenancy.tokens import generate_token

DEFAULT_EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
"""``examples/`` of a source checkout, where the example agents live."""

EXAMPLE_AGENTS = ("summarizer_agent.py", "coder_agent.py", "flaky_agent.py")

SERVER_TUNING: dict[str, str] = {
    "ARAGORA_HEARTBEAT_INTERVAL": "2",
    "ARAGORA_HEARTBEAT_TIMEOUT": "10",
    "ARAGORA_BREAKER_WINDOW_S": "10",
    "ARAGORA_BREAKER_MIN_CALLS": "4",
    "ARAGORA_BREAKER_ERROR_RATE": "0.5",
    "ARAGORA_BREAKER_OPEN_S": "4",
    "ARAGORA_RETRY_BACKOFF_BASE_S": "0.5",
    "ARAGORA_RETRY_BACKOFF_MAX_S": "4",
    "ARAGORA_MAX_TASK_RETRIES": "5",
    "ARAGORA_LOG_JSON": "1",
}
"""Server settings that make retries and breakers visible in seconds, not minutes."""

SERVER_ENV_DROPPED = (
    "ARAGORA_STORE_URL",
    "ARAGORA_REDIS_URL",
    "ARAGORA_DATA_DIR",
    "ARAGORA_ADMIN_TOKEN",
    "ARAGORA_URL",
    "ARAGORA_TOKEN",
)
"""Variables that would point the demo's server elsewhere than its own SQLite store."""

AGENT_HEARTBEAT_INTERVAL_S = "2"
AGENT_START_TIMEOUT_S = 30.0
AGENT_POLL_S = 0.2
AGENT_STOP_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 15.0
PLAIN_STATUS_EVERY_S = 5.0
SIGN_IN_ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class DemoSettings:
    """Options of ``aragora demo``; ``port`` 0 picks a free port, ``data_dir`` None a
    temporary directory removed at the end, ``duration_s`` None runs until a signal."""

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path | None = None
    duration_s: float | None = None
    rate_per_s: float = 2.0
    live: bool = True
    refresh_s: float = 1.0
    seed: int | None = None
    sign_in_role: str = "viewer"
    examples_dir: Path = DEFAULT_EXAMPLES_DIR

    def check(self) -> None:
        """``ConfigError`` naming the first bad option."""
        if not self.rate_per_s > 0:
            raise ConfigError("--rate must be greater than 0")
        if not self.refresh_s > 0:
            raise ConfigError("--refresh-s must be greater than 0")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError("--duration-s must be greater than 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError("--port must be between 0 and 65535")
        if self.sign_in_role not in SIGN_IN_ROLES:
            raise ConfigError(f"--sign-in-role must be one of {', '.join(SIGN_IN_ROLES)}")
        missing = [n for n in EXAMPLE_AGENTS if not (self.examples_dir / n).is_file()]
        if missing:
            raise ConfigError(
                f"--examples-dir {self.examples_dir} lacks {', '.join(missing)}; "
                "point it at the examples/ directory of a source checkout"
            )


@dataclass
class _Signals:
    """The first SIGINT/SIGTERM sets ``stop``; any later one sets ``hurry``."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def on_signal(self) -> None:
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    @contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


class Demo:
    """One run of the demo; :meth:`run` returns the exit status."""

    def __init__(self, settings: DemoSettings, console: Console) -> None:
        settings.check()
        self.settings = settings
        self.console = console
        self.signals = _Signals()
        self.children: list[ChildProcess] = []
        self.breakers = BreakerWatch()
        self.snapshot: Snapshot | None = None
        self.unclean: list[str] = []
        self._stopped: set[str] = set()

    async def run(self) -> int:
        with self.signals.installed():
            async with self._data_dir() as data_dir:
                try:
                    await self._run_in(data_dir)
                finally:
                    await self._stop_children()
        for line in self.unclean:
            self.console.print(line, markup=False, highlight=False)
        return 1 if self.unclean else 0

    @asynccontextmanager
    async def _data_dir(self) -> AsyncIterator[Path]:
        if self.settings.data_dir is not None:
            directory = self.settings.data_dir.expanduser().resolve()
            directory.mkdir(parents=True, exist_ok=True)
            yield directory
            return
        with tempfile.TemporaryDirectory(prefix="aragora-demo-") as name:
            yield Path(name)

    async def _until_stopped(self, work: Awaitable[None]) -> bool:
        """Await ``work``; False (``work`` cancelled) when a stop comes first."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.signals.stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, stop, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()
        return True

    async def _run_in(self, data_dir: Path) -> None:
        host = self.settings.host
        port = self.settings.port or free_port(host)
        url = f"http://{host}:{port}"
        admin_token = generate_token()[1]
        admin_token_file = data_dir / "admin.token"
        write_token_file(admin_token_file, admin_token)
        server = self._child(
            "server",
            ["serve", "--host", host, "--port", str(port), "--data-dir", str(data_dir)],
            child_env(
                {**SERVER_TUNING, **_set_in_environment(SERVER_TUNING)},
                drop=SERVER_ENV_DROPPED,
            )
            | {"ARAGORA_ADMIN_TOKEN": admin_token},
            data_dir / "server.log",
            cli=True,
        )
        await server.start()
        if not await self._until_stopped(wait_until_ready(server, url)):
            return
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with (
            AsyncControlPlaneClient(url, admin_token) as client,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0) as http,
        ):
            _, sign_in_token = await client.create_token(Role(self.settings.sign_in_role))
            for script in EXAMPLE_AGENTS:
                _, agent_token = await client.create_token(Role.AGENT)
                agent = self._child(
                    script.removesuffix(".py"),
                    [str(self.settings.examples_dir / script)],
                    child_env(
                        {
                            "ARAGORA_URL": url,
                            "ARAGORA_TOKEN": agent_token,
                            "ARAGORA_HEARTBEAT_INTERVAL": AGENT_HEARTBEAT_INTERVAL_S,
                        },
                        drop=("ARAGORA_DATA_DIR",),
                    ),
                    data_dir / f"{script.removesuffix('.py')}.log",
                )
                await agent.start()
            if not await self._until_stopped(self._wait_for_agents(client)):
                return
            banner = Banner(
                dashboard_url=f"{url}/",
                sign_in_role=self.settings.sign_in_role,
                sign_in_token=sign_in_token,
                admin_token_file=str(admin_token_file),
                data_dir=str(data_dir),
            )
            stream = TaskStream(client, self.settings.rate_per_s, self.settings.seed)
            traffic_stop = asyncio.Event()
            traffic = asyncio.create_task(stream.run(traffic_stop), name="aragora-demo-traffic")
            try:
                await self._watch(banner, stream, Monitor(client, http))
            finally:
                traffic_stop.set()
                await traffic
                await self._stop_agents()
                with contextlib.suppress(ControlPlaneError, httpx.HTTPError):
                    await self._take_snapshot(Monitor(client, http))
                self.console.print(
                    summary_line(self.snapshot, stream.stats, self.breakers),
                    markup=False,
                    highlight=False,
                )

    async def _wait_for_agents(self, client: AsyncControlPlaneClient) -> None:
        """Return once every example agent has registered; ``ControlPlaneError`` (exit
        status 1) with its last log lines when one exits first or time runs out."""
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        agents = [c for c in self.children if c.name != "server"]
        while True:
            for agent in agents:
                if not agent.running:
                    raise ControlPlaneError(
                        f"the example agent {agent.name} exited with status "
                        f"{agent.returncode}:\n{agent.log_tail()}"
                    )
            live = [a for a in await client.list_agents() if a.status is not AgentStatus.OFFLINE]
            if len(live) >= len(agents):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"the example agents did not register within {AGENT_START_TIMEOUT_S:g}s"
                )
            await asyncio.sleep(AGENT_POLL_S)

    def _child(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        cli: bool = False,
    ) -> ChildProcess:
        argv = [sys.executable, "-m", "aragora.cli", *args] if cli else [sys.executable, *args]
        child = ChildProcess(name, argv, env, log_path)
        self.children.append(child)
        return child

    async def _take_snapshot(self, monitor: Monitor) -> list[tuple[str, str, str]]:
        self.snapshot = await monitor.snapshot()
        return self.breakers.observe(self.snapshot)

    async def _watch(self, banner: Banner, stream: TaskStream, monitor: Monitor) -> None:
        started_at = time.monotonic()
        deadline = (
            None if self.settings.duration_s is None else started_at + self.settings.duration_s
        )
        live = self.settings.live and self.console.is_terminal
        if not live:
            for line in banner_lines(banner):
                self.console.print(line, markup=False, highlight=False)
        last_plain_at = 0.0
        with (
            Live(console=self.console, auto_refresh=False, transient=False)
            if live
            else contextlib.nullcontext() as display
        ):
            while not self.signals.stop.is_set():
                error = ""
                try:
                    changes = await self._take_snapshot(monitor)
                except (ControlPlaneError, httpx.HTTPError) as exc:
                    changes, error = [], f"snapshot failed: {exc}"
                elapsed_s = time.monotonic() - started_at
                if isinstance(display, Live):
                    display.update(
                        render(banner, self.snapshot, stream.stats, self.breakers, elapsed_s),
                        refresh=True,
                    )
                else:
                    for agent_id, before, after in changes:
                        self._say(f"breaker of {agent_id}: {before} -> {after}")
                    if error:
                        self._say(error)
                    if self.snapshot is not None and (
                        elapsed_s - last_plain_at >= PLAIN_STATUS_EVERY_S or last_plain_at == 0.0
                    ):
                        last_plain_at = elapsed_s
                        self._say(status_line(self.snapshot, stream.stats, elapsed_s))
                wait_s = self.settings.refresh_s
                if deadline is not None:
                    wait_s = min(wait_s, deadline - time.monotonic())
                    if wait_s <= 0:
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.signals.stop.wait(), wait_s)
        self._say("stopping: agents drain, then the server stops")

    def _say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    async def _stop_agents(self) -> None:
        agents = [c for c in self.children if c.name != "server"]
        await asyncio.gather(
            *(self._stop_child(c, signal.SIGTERM, AGENT_STOP_TIMEOUT_S) for c in agents)
        )

    async def _stop_children(self) -> None:
        """Stop whatever still runs: agents first, the server last."""
        await self._stop_agents()
        for child in self.children:
            if child.name == "server":
                await self._stop_child(child, signal.SIGINT, SERVER_STOP_TIMEOUT_S)

    async def _stop_child(self, child: ChildProcess, sig: signal.Signals, timeout_s: float) -> None:
        if child.pid is None or child.name in self._stopped:
            return
        started_at = time.monotonic()
        code = await child.stop(sig, timeout_s, hurry=self.signals.hurry)
        self._stopped.add(child.name)
        # Ending by the signal it was sent (before it installed its handlers) is clean too.
        if code not in (0, -sig):
            waited_s = time.monotonic() - started_at
            self.unclean.append(
                f"warning: {child.name} ended with status {code} after {waited_s:.1f}s "
                f"(log: {child.log_path})"
            )


def _set_in_environment(names: dict[str, str]) -> dict[str, str]:
    return {name: os.environ[name] for name in names if name in os.environ}


def run_demo(settings: DemoSettings, console: Console | None = None) -> int:
    """Run the demo until a signal or ``settings.duration_s``; the exit status."""
    demo = Demo(settings, console or Console(soft_wrap=True))
    return asyncio.run(demo.run())
