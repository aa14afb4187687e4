"""All processes of one run, started in order and stopped on exit (``async with``)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
from pathlib import Path
from types import TracebackType
from typing import Self

from aragora.client import AsyncControlPlaneClient
from chaos.procs import (
    AgentProcess,
    ManagedProcess,
    ProxyProcess,
    RedisProcess,
    ServerProcess,
    child_env,
)
from chaos.scenario import Scenario

KEY_PREFIX = "aragora:chaos:"
WORKSPACE = "default"
CAPABILITY_SETS: tuple[tuple[str, ...], ...] = (("alpha", "beta"), ("alpha", "gamma"))
"""Agent ``i`` has ``CAPABILITY_SETS[i % 2]``: every capability a task may require is
served by at least one agent, and some only by half of them."""


class Cluster:
    """Redis (AOF), the proxy, ``scenario.servers`` servers and ``scenario.agents``
    agents; ``submitter_token`` and ``admin_token`` are issued at start."""

    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.admin_token = secrets.token_urlsafe(24)
        self.submitter_token = ""
        self.redis = RedisProcess(workdir)
        self.proxy = ProxyProcess(workdir, self.redis.port)
        server_env = child_env(
            {
                "ARAGORA_ADMIN_TOKEN": self.admin_token,
                "ARAGORA_SECRET_KEY": base64.b64encode(os.urandom(32)).decode("ascii"),
                "ARAGORA_KEY_PREFIX": KEY_PREFIX,
                "ARAGORA_HEARTBEAT_TIMEOUT": str(scenario.heartbeat_timeout_s),
                "ARAGORA_HEARTBEAT_INTERVAL": str(scenario.heartbeat_interval_s),
                "ARAGORA_TASK_TIMEOUT": str(scenario.task_timeout_s),
                "ARAGORA_MAX_TASK_RETRIES": str(scenario.max_retries),
                "ARAGORA_RETRY_BACKOFF_BASE_S": "0.2",
                "ARAGORA_RETRY_BACKOFF_MAX_S": "2",
                "ARAGORA_REAP_INTERVAL_S": str(scenario.heartbeat_interval_s / 2),
                "ARAGORA_BREAKER_OPEN_S": "5",
            }
        )
        self.servers = [
            ServerProcess(i, workdir, self.proxy.url, server_env) for i in range(scenario.servers)
        ]
        self.agents: list[AgentProcess] = []

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def admin(self, server: int = 0) -> AsyncControlPlaneClient:
        return AsyncControlPlaneClient(self.servers[server].url, self.admin_token, timeout_s=30.0)

    def processes(self) -> list[ManagedProcess]:
        return [*self.agents, *self.servers, self.proxy, self.redis]

    async def start(self) -> None:
        self.redis.start()
        await self.redis.wait_ready()
        self.proxy.start()
        await self.proxy.wait_ready()
        for server in self.servers:
            server.start()
        await asyncio.gather(*(s.wait_ready() for s in self.servers))
        async with self.admin() as admin:
            await admin.update_workspace(WORKSPACE, plan="unlimited")
            _, agent_token = await admin.create_token("agent")
            _, self.submitter_token = await admin.create_token("submitter")
        scenario = self.scenario
        for i in range(scenario.agents):
            env = child_env(
                {
                    "ARAGORA_URL": self.servers[i % len(self.servers)].url,
                    "ARAGORA_TOKEN": agent_token,
                    "ARAGORA_HEARTBEAT_INTERVAL": str(scenario.heartbeat_interval_s),
                    "CHAOS_CAPABILITIES": ",".join(CAPABILITY_SETS[i % len(CAPABILITY_SETS)]),
                    "CHAOS_CONCURRENCY": str(scenario.agent_concurrency),
                    "CHAOS_FAILURE_RATE": str(scenario.failure_rate),
                    "CHAOS_HANDLER_MIN_S": str(scenario.handler_min_s),
                    "CHAOS_HANDLER_MAX_S": str(scenario.handler_max_s),
                    "CHAOS_SEED": str(scenario.seed),
                }
            )
            agent = AgentProcess(f"chaos-agent-{i}", self.workdir, env)
            agent.start()
            self.agents.append(agent)

    async def heal(self) -> None:
        """Undo whatever fault is left: continue stopped processes, restart dead ones,
        restore the proxy; return once Redis and every server are ready."""
        for proc in self.processes():
            if proc.stopped:
                proc.signal(signal.SIGCONT)
        self.proxy.restore()
        if not self.redis.alive():
            self.redis.start()
        await self.redis.wait_ready()
        if not self.proxy.alive():
            self.proxy.start()
            await self.proxy.wait_ready()
        for server in self.servers:
            if not server.alive():
                server.start()
        await asyncio.gather(*(s.wait_ready() for s in self.servers))
        for agent in self.agents:
            if not agent.alive():
                agent.start()

    def stop_agents(self) -> None:
        """Stop every agent gracefully (each drains and deregisters), together."""
        for agent in self.agents:
            agent.request_stop()
        for agent in self.agents:
            agent.terminate()

    def stop(self) -> None:
        """Agents first (they drain and deregister), then servers, proxy and Redis; the
        processes of each group stop together."""
        for group in (self.agents, self.servers, [self.proxy], [self.redis]):
            for proc in group:
                proc.request_stop()
            for proc in group:
                proc.terminate()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
