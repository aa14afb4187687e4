"""Our control plane over HTTP as a system under W1/W2: ``aragora serve``, the Python
client as producer and the SDK ``Agent`` as the worker process.

Producer (the benchmark process): one ``AsyncControlPlaneClient``. ``submit`` is
``submit_task("add_one", value)``; ``result`` is ``wait_for_result(task_id, timeout)``,
a long poll of the task that the server answers as soon as the task ends.

Worker (``python -m bench.sdk_agent SETTINGS_JSON``, started by ``SdkAgentProcess``): an
``aragora.agent.Agent`` with one handler, ``add_one`` (a coroutine returning
``payload + 1``), ``concurrency`` from the settings and every other option at its
default, reading the server's URL and token from ``ARAGORA_URL`` / ``ARAGORA_TOKEN`` as
a deployed agent does. It registers after "go" and drains on stop, like the library
worker of ``bench.peers.aragora``.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from typing import Any, ClassVar

from aragora.agent import Agent, TaskContext
from aragora.client import AsyncControlPlaneClient
from bench.peers.base import (
    ADD_ONE,
    READY_LINE,
    REPO_ROOT,
    STOP_GRACE_S,
    Adapter,
    Gate,
    Settings,
    WorkerFailed,
    WorkerProcess,
    child_env,
)

AGENT_ID = "bench-sdk-agent"
MODEL = "bench"


def http_settings(url: str, token: str, concurrency: int, namespace: str) -> Settings:
    """Settings of one HTTP measurement: the server, its token and the agent's concurrency."""
    return Settings(
        "aragora-http", "", namespace, {"url": url, "token": token, "concurrency": concurrency}
    )


class HttpAdapter(Adapter):
    """Producer on ``AsyncControlPlaneClient``; worker is the SDK ``Agent``."""

    name: ClassVar[str] = "aragora-http"
    distribution: ClassVar[str] = "aragora-control-plane"
    worker_config: ClassVar[str] = "1 process, 1 SDK Agent (concurrency=1) over HTTP"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client: AsyncControlPlaneClient | None = None

    @classmethod
    def describe_worker(cls, options: dict[str, Any]) -> str:
        return (
            f"1 process, 1 SDK Agent (concurrency={int(options.get('concurrency', 1))}) "
            "over HTTP to aragora serve"
        )

    @property
    def client(self) -> AsyncControlPlaneClient:
        if self._client is None:
            raise RuntimeError("producer is not open")
        return self._client

    async def open(self) -> None:
        options = self.settings.options
        self._client = AsyncControlPlaneClient(options["url"], options["token"])

    async def submit(self, value: int) -> str:
        return await self.client.submit_task(ADD_ONE, value)

    async def result(self, handle: Any, timeout_s: float) -> Any:
        return await self.client.wait_for_result(handle, timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @classmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        def on_stop() -> None:
            loop.call_soon_threadsafe(stop.set)

        agent = Agent(
            AGENT_ID, model=MODEL, concurrency=int(settings.options.get("concurrency", 1))
        )

        @agent.task(ADD_ONE)
        async def add_one(payload: int, ctx: TaskContext) -> int:
            return payload + 1

        gate.wait_for_go(on_stop)
        try:
            loop.run_until_complete(agent.run_async(stop))
        finally:
            loop.close()


class SdkAgentProcess(WorkerProcess):
    """``WorkerProcess`` running ``python -m bench.sdk_agent`` with the server's URL and
    token in ``ARAGORA_URL`` / ``ARAGORA_TOKEN`` (not on the command line)."""

    def start(self, timeout_s: float) -> None:
        options = self.settings.options
        env = {**child_env(), "ARAGORA_URL": options["url"], "ARAGORA_TOKEN": options["token"]}
        public = Settings(
            self.settings.system,
            self.settings.redis_url,
            self.settings.namespace,
            {k: v for k, v in options.items() if k != "token"},
        )
        with self.log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sdk_agent", public.to_json()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
                env=env,
                text=True,
                start_new_session=True,
            )
        self._proc = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailed(f"SDK agent not ready within {timeout_s:.0f}s")
            readable, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
            if not readable:
                continue
            line = proc.stdout.readline()
            if line.strip() == READY_LINE:
                return
            if not line:
                proc.wait(timeout=STOP_GRACE_S)
                raise WorkerFailed(f"SDK agent exited with {proc.returncode} before ready")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.sdk_agent SETTINGS_JSON", file=sys.stderr)
        return 2
    settings = Settings.from_json(argv[1])
    control = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    HttpAdapter.run_worker(settings, Gate(control))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
