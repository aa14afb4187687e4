"""The agent SDK in-process, against the real app and an SQLite store."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aragora.agent import Agent, PermanentError, TaskContext
from aragora.client import AsyncControlPlaneClient
from aragora.control_plane import (
    AgentNotFoundError,
    ConfigError,
    TaskStatus,
)
from aragora.control_plane.models import Task, TaskPriority
from tests.client.inprocess import InProcess, in_process

T = TypeVar("T")
WAIT_S = 10.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tmp_path) as running:
        yield running


@pytest.fixture
async def client(server: InProcess) -> AsyncIterator[AsyncControlPlaneClient]:
    async with server.client() as c:
        yield c


class AgentEvents(logging.Handler):
    """Wakes tests when the agent logs an event (``agent_draining``, ...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: dict[str, asyncio.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if isinstance(event, str):
            self.seen(event).set()

    def seen(self, event: str) -> asyncio.Event:
        return self.events.setdefault(event, asyncio.Event())


@pytest.fixture
def agent_events() -> Iterator[AgentEvents]:
    watcher = AgentEvents()
    log = logging.getLogger("aragora.agent")
    previous = log.level
    log.setLevel(logging.INFO)
    log.addHandler(watcher)
    try:
        yield watcher
    finally:
        log.removeHandler(watcher)
        log.setLevel(previous)


def make_agent(server: InProcess, agent_id: str = "a-1", **kwargs: Any) -> Agent:
    settings: dict[str, Any] = {
        "capabilities": ["work"],
        "model": "test",
        "heartbeat_interval_s": 0.05,
        "claim_wait_s": 5.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        **kwargs,
    }
    return Agent(agent_id, client=server.client(), **settings)


async def within(awaitable: Awaitable[T], timeout_s: float = WAIT_S) -> T:
    return await asyncio.wait_for(awaitable, timeout_s)


class Running:
    """An agent's ``run_async`` as a background task, stopped by ``stop()``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(agent.run_async(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        await within(self.task)
        client = self.agent._given_client
        assert client is not None
        await client.aclose()


async def test_async_and_sync_handlers_complete_tasks(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server)
    threads: list[str] = []

    @agent.task("async")
    async def run_async(payload: Any, ctx: TaskContext) -> dict[str, Any]:
        ctx.report_cost(0.5)
        ctx.report_cost(0.25)
        return {"payload": payload, "correlation_id": ctx.correlation_id, "attempt": ctx.attempt}

    @agent.task("sync")
    def run_sync(payload: Any, ctx: TaskContext) -> str:
        threads.append(threading.current_thread().name)
        return f"{payload['word']}!"

    running = Running(agent)
    first = await client.submit_task("async", [1], ["work"], metadata={"correlation_id": "req-7"})
    second = await client.submit_task("sync", {"word": "hi"}, ["work"])

    assert await client.wait_for_result(first, WAIT_S) == {
        "payload": [1],
        "correlation_id": "req-7",
        "attempt": 1,
    }
    assert await client.wait_for_result(second, WAIT_S) == "hi!"
    assert (await client.get_task(first)).cost == 0.75
    assert threads and threads[0] != threading.main_thread().name
    await running.stop()
    with pytest.raises(AgentNotFoundError):
        await client.get_agent("a-1")


async def test_errors_retry_unless_permanent(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server)

    @agent.task("flaky")
    async def flaky(payload: Any, ctx: TaskContext) -> None:
        raise ValueError(f"flaky attempt {ctx.attempt}")

    @agent.task("hopeless")
    async def hopeless(payload: Any, ctx: TaskContext) -> None:
        raise PermanentError("malformed payload")

    running = Running(agent)
    retried = await client.submit_task("flaky", {}, ["work"], max_retries=2)
    permanent = await client.submit_task("hopeless", {}, ["work"], max_retries=2)

    flaky_task = await client.wait_for_task(retried, WAIT_S)
    hopeless_task = await client.wait_for_task(permanent, WAIT_S)
    await running.stop()

    assert flaky_task.status is TaskStatus.FAILED
    assert [e.error for e in flaky_task.errors] == [f"flaky attempt {n}" for n in (1, 2, 3)]
    assert hopeless_task.status is TaskStatus.FAILED
    assert [e.error for e in hopeless_task.errors] == ["malformed payload"]


async def test_tasks_it_cannot_run_fail_without_retries(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server)

    @agent.task("known")
    async def known(payload: Any, ctx: TaskContext) -> object:
        return object()  # not JSON

    running = Running(agent)
    unknown = await client.submit_task("unknown", {}, ["work"])
    bad_result = await client.submit_task("known", {}, ["work"])
    unknown_task = await client.wait_for_task(unknown, WAIT_S)
    bad_task = await client.wait_for_task(bad_result, WAIT_S)
    await running.stop()

    assert unknown_task.status is TaskStatus.FAILED and unknown_task.attempt == 1
    assert "no handler for task type 'unknown'" in (unknown_task.error or "")
    assert bad_task.status is TaskStatus.FAILED and bad_task.attempt == 1
    assert "not JSON-encodable" in (bad_task.error or "")


async def test_cancel_on_the_server_cancels_the_handler(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server)
    started = asyncio.Event()
    cancelled = asyncio.Event()
    contexts: list[TaskContext] = []

    @agent.task("forever")
    async def forever(payload: Any, ctx: TaskContext) -> None:
        contexts.append(ctx)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = Running(agent)
    task_id = await client.submit_task("forever", {}, ["work"])
    await within(started.wait())
    assert agent.in_flight_task_ids == (task_id,)
    await client.cancel_task(task_id)
    await within(cancelled.wait())
    assert contexts[0].cancelled

    follow_up = await client.submit_task("forever", {}, ["work"], priority=TaskPriority.LOW)
    started.clear()
    await within(started.wait())  # the slot was freed: the next task runs
    await client.cancel_task(follow_up)
    await running.stop()
    assert (await client.get_task(task_id)).status is TaskStatus.CANCELLED


async def test_agent_registers_again_when_the_server_forgot_it(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server, claim_wait_s=0.2)

    @agent.task("echo")
    async def echo(payload: Any, ctx: TaskContext) -> Any:
        return payload

    async with agent:
        await client.deregister_agent("a-1")
        task_id = await client.submit_task("echo", "back", ["work"])
        assert await client.wait_for_result(task_id, WAIT_S) == "back"
        assert (await client.get_agent("a-1")).agent_id == "a-1"
    assert agent._given_client is not None
    await agent._given_client.aclose()


async def test_drain_finishes_in_flight_tasks_then_deregisters(
    server: InProcess, client: AsyncControlPlaneClient, agent_events: AgentEvents
) -> None:
    agent = make_agent(server, concurrency=2)
    started = asyncio.Event()
    release = asyncio.Event()

    @agent.task("slow")
    async def slow(payload: Any, ctx: TaskContext) -> str:
        started.set()
        await release.wait()
        return "finished"

    running = Running(agent)
    task_id = await client.submit_task("slow", {}, ["work"])
    await within(started.wait())
    running.stop_event.set()
    await within(agent_events.seen("agent_draining").wait())
    assert agent.draining and agent.in_flight_task_ids == (task_id,)
    assert (await client.get_agent("a-1")).status.value == "draining"
    release.set()
    await running.stop()

    task = await client.get_task(task_id)
    assert (task.status, task.result, task.attempt) == (TaskStatus.COMPLETED, "finished", 1)
    with pytest.raises(AgentNotFoundError):
        await client.get_agent("a-1")


async def test_drain_grace_ends_with_the_task_back_in_the_queue(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server, drain_grace_s=0.05)
    started = asyncio.Event()

    @agent.task("stuck")
    async def stuck(payload: Any, ctx: TaskContext) -> None:
        started.set()
        await asyncio.Event().wait()

    running = Running(agent)
    task_id = await client.submit_task("stuck", {}, ["work"])
    await within(started.wait())
    await running.stop()

    task = await client.get_task(task_id)
    assert task.status is TaskStatus.PENDING
    assert [e.error for e in task.errors] == ["agent shut down before the task finished"]


async def test_concurrency_runs_tasks_side_by_side(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server, concurrency=2)
    both = asyncio.Barrier(2)

    @agent.task("pair")
    async def pair(payload: Any, ctx: TaskContext) -> int:
        await within(both.wait(), 5)
        return int(payload)

    running = Running(agent)
    ids = [await client.submit_task("pair", n, ["work"]) for n in (1, 2)]
    results = [await client.wait_for_result(i, WAIT_S) for i in ids]
    info = await client.get_agent("a-1")
    await running.stop()
    assert results == [1, 2]
    assert info.max_concurrent_tasks == 2


async def test_handler_past_the_task_timeout_is_failed(
    server: InProcess, client: AsyncControlPlaneClient
) -> None:
    agent = make_agent(server)

    @agent.task("late")
    async def late(payload: Any, ctx: TaskContext) -> None:
        await asyncio.Event().wait()

    running = Running(agent)
    task_id = await client.submit_task("late", {}, ["work"], timeout_s=0.1, max_retries=0)
    task = await client.wait_for_task(task_id, WAIT_S)
    await running.stop()
    assert task.status is TaskStatus.FAILED
    assert "past the task timeout" in (task.error or "")


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigError):
        Agent("a", concurrency=0)
    with pytest.raises(ConfigError):
        Agent("a", heartbeat_interval_s=0)
    agent = Agent("a", heartbeat_interval_s=1)

    @agent.task("t")
    def handler(payload: Any, ctx: TaskContext) -> None:
        return None

    with pytest.raises(ValueError, match="already registered"):
        agent.add_handler("t", handler)
    assert agent.task_types == ("t",)


def test_heartbeat_interval_defaults_to_the_deployment_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARAGORA_HEARTBEAT_INTERVAL", "0.5")
    assert Agent("a").heartbeat_interval_s == 0.5
    monkeypatch.delenv("ARAGORA_HEARTBEAT_INTERVAL")
    assert Agent("a").heartbeat_interval_s == 10.0


def _task(**changes: Any) -> Task:
    fields: dict[str, Any] = {
        "id": "t1",
        "task_type": "x",
        "payload": {},
        "priority": TaskPriority.NORMAL,
        "status": TaskStatus.RUNNING,
        "required_capabilities": (),
        "workspace_id": "default",
        "attempt": 2,
        "max_retries": 3,
        "timeout_s": 5.0,
        "created_at": 0.0,
        **changes,
    }
    return Task(**fields)


def test_task_context() -> None:
    ctx = TaskContext(_task(), "a-1")
    assert (ctx.task_id, ctx.attempt, ctx.correlation_id, ctx.cost) == ("t1", 2, "t1", None)
    ctx.report_cost(1)
    ctx.report_cost(0.5)
    assert ctx.cost == 1.5
    with pytest.raises(ValueError, match="finite"):
        ctx.report_cost(-1)
    with pytest.raises(TypeError):
        ctx.report_cost(True)
    assert TaskContext(_task(metadata={"correlation_id": "c-9"}), "a").correlation_id == "c-9"
