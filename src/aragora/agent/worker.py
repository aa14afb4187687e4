"""``Agent``: register, heartbeat, claim tasks, run their handlers, report, drain.

One agent process runs three kinds of background work on one event loop, each kept by
reference and stopped in order on shutdown:

* the **claim loop** long-polls whenever fewer than ``concurrency`` tasks are in
  flight, for as many tasks as there are free slots (up to ``MAX_CLAIM_BATCH``) in one
  request, and starts a runner for each task it gets;
* the **heartbeat loop** keeps the agent alive, re-registers when the server no longer
  knows it, and cancels the handlers of tasks cancelled on the server;
* one **runner** per task runs the handler (a coroutine function, or a plain function
  in a worker thread), then completes or fails the task. The final write is shielded
  from cancellation and retried while the server cannot be reached. Completions that
  finish while another is on the wire share the next request (``Batcher``; each still
  checked against its own lease token); a lone completion is sent at once.

Against a server without the batch routes the agent falls back to one task per claim
and one request per completion.

Shutdown (SIGINT/SIGTERM under ``run()``, the stop event of ``run_async``, or leaving
``async with``) drains: stop claiming, tell the server "draining", give in-flight tasks
``drain_grace_s`` to finish, fail what is left as retryable, deregister. A second signal
skips the rest of the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from aragora import __version__
from aragora.agent.batching import Batcher
from aragora.agent.context import PermanentError, TaskContext
from aragora.client import (
    AsyncControlPlaneClient,
    AuthenticationError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServerUnreachableError,
)
from aragora.control_plane.errors import (
    AgentNotFoundError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    NotFoundError,
    StoreUnavailableError,
    TaskCancelledError,
    ValidationError,
)
from aragora.control_plane.models import AgentStatus, Task
from aragora.observability.logging import (
    bind_correlation_id,
    current_correlation_id,
    reset_correlation_id,
)

logger = logging.getLogger("aragora.agent")

Handler = Callable[[Any, TaskContext], Any]
"""``handler(payload, ctx)``: a coroutine function or a plain function; returns the result."""

H = TypeVar("H", bound=Handler)

TRANSIENT_ERRORS: tuple[type[ControlPlaneError], ...] = (
    ServerUnreachableError,
    StoreUnavailableError,
    ServerError,
)
"""Errors worth retrying after a pause: the server or its store is away for a moment."""

DEFAULT_HEARTBEAT_INTERVAL_S = 10.0
MAX_CLAIM_BATCH = 100
"""Most tasks one claim request asks for (the server's batch limit)."""
MAX_REPORT_BATCH = 100
"""Most completions one request carries."""
SHUTDOWN_REPORT_WAIT_S = 15.0
DEREGISTER_WAIT_S = 5.0


def _log(level: int, event: str, **fields: Any) -> None:
    """One structured log line: ``event key=value ...``, with the fields also in ``extra``.

    Inside a task's run the task's correlation id is bound to the context, so every line
    about that task carries ``correlation_id`` unless the caller named one.
    """
    if not logger.isEnabledFor(level):
        return
    correlation_id = current_correlation_id()
    if correlation_id is not None and "correlation_id" not in fields:
        fields["correlation_id"] = correlation_id
    text = " ".join(
        [event, *(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items())]
    )
    logger.log(level, "%s", text, extra={"event": event, "fields": fields})


class _Backoff:
    """Exponential delays from ``initial_s`` up to ``max_s``, each drawn between half the
    step and the step so that many agents restarting together spread out."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def next_delay_s(self, error: BaseException | None = None) -> float:
        """The next delay; never shorter than the server's Retry-After of a 429."""
        ceiling = min(self.max_s, self.initial_s * (2**self.failures))
        self.failures += 1
        delay_s = random.uniform(ceiling / 2, ceiling)
        if isinstance(error, RateLimitedError):
            delay_s = max(delay_s, error.retry_after_s)
        return delay_s

    def reset(self) -> None:
        self.failures = 0


@dataclass(eq=False)
class _Running:
    """A task in flight: its context, the handler's asyncio task and how it ended."""

    task: Task
    ctx: TaskContext
    handler: asyncio.Task[Any] | None = None
    runner: asyncio.Task[None] | None = None
    cancelled_by_server: bool = False


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    result: Any = None
    error: str = ""
    retryable: bool = True


@dataclass
class _LoopState:
    """Everything bound to the running event loop; made fresh on every start."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)
    registration: asyncio.Lock = field(default_factory=asyncio.Lock)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


class Agent:
    """A worker that serves task types with handlers, registered under ``agent_id``.

    ::

        agent = Agent("writer-1", capabilities=["debate"], model="local-echo")

        @agent.task("debate")
        async def debate(payload: dict, ctx: TaskContext) -> dict:
            return {"answer": payload["topic"].upper()}

        agent.run()

    ``capabilities`` are what tasks are routed by (a task's required capabilities must
    all be among them); when empty, the registered task types are used. ``url`` and
    ``token`` default to ARAGORA_URL / ARAGORA_TOKEN. ``concurrency`` is how many tasks
    run at once (the server's ``max_concurrent_tasks``). ``heartbeat_interval_s``
    defaults to ARAGORA_HEARTBEAT_INTERVAL, else 10 s: keep it well under the server's
    heartbeat timeout. ``claim_wait_s`` is the long-poll of one claim request.
    ``drain_grace_s`` is how long shutdown waits for in-flight tasks. ``client`` replaces
    the HTTP client the agent would make from ``url`` and ``token`` (its owner closes it).
    """

    def __init__(
        self,
        agent_id: str,
        *,
        capabilities: Sequence[str] = (),
        model: str = "unspecified",
        url: str | None = None,
        token: str | None = None,
        concurrency: int = 1,
        heartbeat_interval_s: float | None = None,
        claim_wait_s: float = 20.0,
        drain_grace_s: float = 30.0,
        metadata: Mapping[str, Any] | None = None,
        request_timeout_s: float = 30.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        client: AsyncControlPlaneClient | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency must be an integer of 1 or more")
        if heartbeat_interval_s is None:
            heartbeat_interval_s = _env_float(
                "ARAGORA_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL_S
            )
        for name, value in (
            ("heartbeat_interval_s", heartbeat_interval_s),
            ("claim_wait_s", claim_wait_s),
            ("request_timeout_s", request_timeout_s),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be greater than 0")
        if drain_grace_s < 0:
            raise ConfigError("drain_grace_s must be 0 or more")
        self.agent_id = agent_id
        self.capabilities = tuple(capabilities)
        self.model = model
        self.url = url
        self.token = token
        self.concurrency = concurrency
        self.heartbeat_interval_s = float(heartbeat_interval_s)
        self.claim_wait_s = float(claim_wait_s)
        self.drain_grace_s = float(drain_grace_s)
        self.request_timeout_s = float(request_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.metadata: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "sdk": f"aragora/{__version__}",
            **dict(metadata or {}),
        }
        self._handlers: dict[str, Handler] = {}
        self._given_client = client
        self._client: AsyncControlPlaneClient | None = None
        self._state: _LoopState | None = None
        self._in_flight: dict[str, _Running] = {}
        self._reports: set[asyncio.Task[None]] = set()
        self._claim_loop_task: asyncio.Task[None] | None = None
        self._completions: Batcher[tuple[str, Any, str, float | None], Task | ControlPlaneError]
        self._completions = Batcher(self._flush_completions, max_items=MAX_REPORT_BATCH)
        self._batch_routes = True
        self._heartbeat_loop_task: asyncio.Task[None] | None = None
        self._registered = False
        self._generation = 0
        self._draining = False
        self._fatal: ControlPlaneError | None = None
        self._running = False

    # -- handlers ------------------------------------------------------------------
    def task(self, task_type: str) -> Callable[[H], H]:
        """Decorator: serve tasks of ``task_type`` with the decorated function."""

        def register(handler: H) -> H:
            self.add_handler(task_type, handler)
            return handler

        return register

    def add_handler(self, task_type: str, handler: Handler) -> None:
        """Serve tasks of ``task_type`` with ``handler(payload, ctx)``."""
        if task_type in self._handlers:
            raise ValueError(f"a handler for task type {task_type!r} is already registered")
        self._handlers[task_type] = handler

    @property
    def task_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    @property
    def in_flight_task_ids(self) -> tuple[str, ...]:
        """Ids of the tasks this agent runs right now."""
        return tuple(self._in_flight)

    @property
    def draining(self) -> bool:
        return self._draining

    # -- lifecycle -----------------------------------------------------------------
    def run(self) -> None:
        """Run until SIGINT or SIGTERM, then drain and return (the process exits 0).

        A fatal error (wrong token, invalid registration) ends the process with a
        one-line message and exit status 1.
        """
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
            )
            logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(self.run_async(handle_signals=True))
        except ControlPlaneError as exc:
            raise SystemExit(f"aragora agent {self.agent_id}: {exc}") from None

    async def run_async(
        self, stop_event: asyncio.Event | None = None, *, handle_signals: bool = False
    ) -> None:
        """Register, serve tasks until ``stop_event`` is set (or ``stop()`` is called), drain.

        ``handle_signals`` installs SIGINT/SIGTERM handlers that stop the agent (only
        from the main thread). Raises the fatal ``ControlPlaneError`` that stopped the
        agent, if one did.
        """
        state = self._prepare()
        watchers: list[asyncio.Task[None]] = []
        if stop_event is not None:
            watchers.append(asyncio.create_task(self._stop_when_set(stop_event)))
        installed = self._install_signal_handlers() if handle_signals else []
        try:
            await self.start()
            await state.stopping.wait()
        finally:
            try:
                await self.shutdown()
            finally:
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
                loop = asyncio.get_running_loop()
                for sig in installed:
                    loop.remove_signal_handler(sig)
        if self._fatal is not None:
            raise self._fatal

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def stop(self) -> None:
        """Ask the agent to drain and stop; safe to call more than once."""
        if self._state is not None:
            self._state.stopping.set()

    def force_stop(self) -> None:
        """Stop without waiting out the grace period: running handlers are cancelled now."""
        if self._state is not None:
            self._state.stopping.set()
            self._state.force.set()

    async def start(self) -> None:
        """Register (retrying while the server is not up yet) and start the background loops.

        Returns early, without registering, when a stop is requested meanwhile.
        """
        if self._running:
            raise RuntimeError(f"agent {self.agent_id!r} is already running")
        state = self._prepare()
        self._running = True
        if self._client is None:
            self._client = self._given_client or AsyncControlPlaneClient(
                self.url, self.token, timeout_s=self.request_timeout_s
            )
        backoff = self._backoff()
        while not state.stopping.is_set():
            try:
                await self._register(self._generation)
                break
            except TRANSIENT_ERRORS as exc:
                delay_s = backoff.next_delay_s(exc)
                _log(
                    logging.WARNING, "register_retry", error=str(exc), retry_in_s=round(delay_s, 2)
                )
                await self._pause(delay_s)
        if not self._registered:
            return
        self._heartbeat_loop_task = asyncio.create_task(
            self._heartbeat_loop(), name=f"aragora-agent-{self.agent_id}-heartbeat"
        )
        self._completions = Batcher(self._flush_completions, max_items=MAX_REPORT_BATCH)
        self._completions.start()
        self._claim_loop_task = asyncio.create_task(
            self._claim_loop(), name=f"aragora-agent-{self.agent_id}-claim"
        )

    async def shutdown(self) -> None:
        """Drain and release everything: idempotent, and safe after a partial start."""
        state = self._state
        if state is None or not self._running:
            return
        self._running = False
        state.stopping.set()
        await _cancel_and_wait(self._claim_loop_task)
        self._claim_loop_task = None
        if self._registered:
            self._draining = True
            await self._heartbeat_once()
            _log(
                logging.INFO,
                "agent_draining",
                agent_id=self.agent_id,
                in_flight=len(self._in_flight),
                grace_s=self.drain_grace_s,
            )
        await self._wait_in_flight(state)
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=SHUTDOWN_REPORT_WAIT_S)
        await self._completions.aclose()
        await _cancel_and_wait(self._heartbeat_loop_task)
        self._heartbeat_loop_task = None
        if self._registered:
            await self._deregister()
        leftovers = [r.runner for r in self._in_flight.values() if r.runner is not None]
        for task in [*self._reports, *leftovers]:
            task.cancel()
        await asyncio.gather(*self._reports, *leftovers, return_exceptions=True)
        if self._client is not None and self._client is not self._given_client:
            await self._client.aclose()
        self._client = None
        self._state = None
        _log(logging.INFO, "agent_stopped", agent_id=self.agent_id)

    # -- internals: lifecycle ---------------------------------------------------------
    def _prepare(self) -> _LoopState:
        """The loop-bound state of this run, made on first use and dropped by ``shutdown``."""
        if self._state is None:
            self._state = _LoopState(slots=asyncio.Semaphore(self.concurrency))
            self._fatal = None
            self._draining = False
            self._registered = False
        return self._state

    def _backoff(self) -> _Backoff:
        return _Backoff(self.backoff_initial_s, self.backoff_max_s)

    async def _stop_when_set(self, event: asyncio.Event) -> None:
        await event.wait()
        self.stop()

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        state = self._state
        if state is not None and state.stopping.is_set():
            _log(logging.WARNING, "agent_force_stop", signal=sig.name)
            self.force_stop()
            return
        _log(logging.INFO, "agent_stop_requested", signal=sig.name)
        self.stop()

    def _fatal_error(self, exc: ControlPlaneError) -> None:
        _log(logging.ERROR, "agent_fatal_error", error=str(exc), error_type=type(exc).__name__)
        if self._fatal is None:
            self._fatal = exc
        self.stop()

    async def _pause(self, delay_s: float) -> None:
        """Sleep ``delay_s`` unless a stop is requested first."""
        state = self._state
        assert state is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), delay_s)

    @property
    def _http(self) -> AsyncControlPlaneClient:
        assert self._client is not None, "agent is not started"
        return self._client

    async def _register(self, seen_generation: int) -> None:
        """Register unless someone else re-registered since ``seen_generation`` was read.

        Registering again sends every task still leased to this id back to the queue, so
        two concurrent callers that both found the agent unknown must not both do it.
        """
        state = self._state
        assert state is not None
        async with state.registration:
            if self._registered and self._generation != seen_generation:
                return
            info = await self._http.register_agent(
                self.agent_id,
                self.capabilities or self.task_types,
                self.model,
                max_concurrent_tasks=self.concurrency,
                metadata=self.metadata,
            )
            self._registered = True
            self._generation += 1
            _log(
                logging.INFO,
                "agent_registered",
                agent_id=info.agent_id,
                capabilities=",".join(info.capabilities),
                max_concurrent_tasks=info.max_concurrent_tasks,
            )

    async def _reregister(self, seen_generation: int) -> None:
        _log(logging.WARNING, "agent_unknown_to_server", agent_id=self.agent_id)
        try:
            await self._register(seen_generation)
        except TRANSIENT_ERRORS as exc:
            _log(logging.WARNING, "register_retry", error=str(exc))
            return
        except ControlPlaneError as exc:
            self._fatal_error(exc)
            return
        if self._draining:
            await self._heartbeat_once()

    async def _deregister(self) -> None:
        deadline = time.monotonic() + DEREGISTER_WAIT_S
        backoff = self._backoff()
        while True:
            try:
                await self._http.deregister_agent(self.agent_id)
                _log(logging.INFO, "agent_deregistered", agent_id=self.agent_id)
                break
            except NotFoundError:
                break
            except TRANSIENT_ERRORS as exc:
                delay_s = backoff.next_delay_s(exc)
                if time.monotonic() + delay_s > deadline:
                    _log(logging.WARNING, "deregister_failed", error=str(exc))
                    break
                await asyncio.sleep(delay_s)
            except ControlPlaneError as exc:
                _log(logging.WARNING, "deregister_failed", error=str(exc))
                break
        self._registered = False

    async def _wait_in_flight(self, state: _LoopState) -> None:
        """Give running tasks the grace period (cut short by ``force``), then cancel their
        handlers; the runners then fail those tasks as retryable."""
        runners = {r.runner for r in self._in_flight.values() if r.runner is not None}
        if runners and not state.force.is_set():
            force_wait = asyncio.create_task(state.force.wait())
            deadline = time.monotonic() + self.drain_grace_s
            try:
                while not state.force.is_set():
                    pending = {r for r in runners if not r.done()}
                    remaining = deadline - time.monotonic()
                    if not pending or remaining <= 0:
                        break
                    await asyncio.wait(
                        pending | {force_wait},
                        timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            finally:
                await _cancel_and_wait(force_wait)
        for running in list(self._in_flight.values()):
            if running.handler is not None and not running.handler.done():
                running.ctx._mark_cancelled()
                running.handler.cancel()
        leftovers = {r.runner for r in self._in_flight.values() if r.runner is not None}
        if leftovers:
            await asyncio.wait(leftovers, timeout=SHUTDOWN_REPORT_WAIT_S)

    # -- internals: heartbeat -------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        generation = self._generation
        status = AgentStatus.DRAINING if self._draining else None
        try:
            result = await self._http.heartbeat(self.agent_id, status)
        except AgentNotFoundError:
            await self._reregister(generation)
            return
        except TRANSIENT_ERRORS as exc:
            _log(logging.WARNING, "heartbeat_failed", error=str(exc))
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            self._fatal_error(exc)
            return
        except ControlPlaneError as exc:
            _log(logging.WARNING, "heartbeat_failed", error=str(exc))
            return
        for task_id in result.cancelled_task_ids:
            running = self._in_flight.get(task_id)
            if running is None:
                continue
            _log(
                logging.INFO,
                "task_cancelled_by_server",
                task_id=task_id,
                correlation_id=running.ctx.correlation_id,
            )
            running.cancelled_by_server = True
            running.ctx._mark_cancelled()
            if running.handler is not None:
                running.handler.cancel()

    # -- internals: claiming ----------------------------------------------------------
    async def _claim_loop(self) -> None:
        state = self._state
        assert state is not None
        backoff = self._backoff()
        while not state.stopping.is_set():
            await state.slots.acquire()
            free = 1
            while self._batch_routes and free < MAX_CLAIM_BATCH and not state.slots.locked():
                await state.slots.acquire()  # a free slot: returns at once
                free += 1
            generation = self._generation
            try:
                tasks = await self._claim(free)
            except BaseException as exc:
                for _ in range(free):
                    state.slots.release()
                if isinstance(exc, AgentNotFoundError):
                    await self._reregister(generation)
                elif isinstance(exc, TRANSIENT_ERRORS):
                    delay_s = backoff.next_delay_s(exc)
                    _log(
                        logging.WARNING,
                        "claim_failed",
                        error=str(exc),
                        retry_in_s=round(delay_s, 2),
                    )
                    await self._pause(delay_s)
                elif isinstance(exc, ControlPlaneError):
                    self._fatal_error(exc)
                    return
                else:
                    raise
                continue
            backoff.reset()
            for _ in range(free - len(tasks)):
                state.slots.release()
            for task in tasks:
                self._start_task(task, state)

    async def _claim(self, max_tasks: int) -> list[Task]:
        """Up to ``max_tasks`` tasks in one request; one by one where the server has no
        batch routes (an unknown route answers a plain 404, not an agent-not-found)."""
        if self._batch_routes:
            try:
                return await self._http.claim_tasks(
                    self.agent_id, max_tasks=max_tasks, wait_s=self.claim_wait_s
                )
            except NotFoundError as exc:
                if isinstance(exc, AgentNotFoundError):
                    raise
                self._batch_routes = False
                _log(logging.INFO, "batch_routes_unavailable", agent_id=self.agent_id)
        task = await self._http.claim_task(self.agent_id, wait_s=self.claim_wait_s)
        return [] if task is None else [task]

    async def _flush_completions(
        self, items: list[tuple[str, Any, str, float | None]]
    ) -> list[Task | ControlPlaneError]:
        return await self._http.complete_tasks(items)

    async def _complete(self, task: Task, result: Any, lease: str, cost: float | None) -> None:
        """Complete the attempt, sharing a request with other completions when possible;
        raises what the single route would (``LeaseLostError``, ...)."""
        if self._batch_routes and not self._completions.closing:
            try:
                answer = await self._completions.submit((task.id, result, lease, cost))
            except ValidationError:
                pass  # the batch was refused as a whole: send this one alone below
            else:
                if isinstance(answer, ControlPlaneError):
                    raise answer
                return
        await self._http.complete_task(task.id, result, lease_token=lease, cost=cost)

    def _start_task(self, task: Task, state: _LoopState) -> None:
        ctx = TaskContext(task, self.agent_id)
        running = _Running(task=task, ctx=ctx)
        self._in_flight[task.id] = running
        running.runner = asyncio.create_task(
            self._run_task(running, state), name=f"aragora-task-{task.id}"
        )

    # -- internals: running a task ------------------------------------------------------
    async def _run_task(self, running: _Running, state: _LoopState) -> None:
        task, ctx = running.task, running.ctx
        # This runs in a task of its own: the binding reaches the handler and the report
        # (tasks started from here copy the context) and ends with this run.
        correlation = bind_correlation_id(ctx.correlation_id)
        try:
            _log(
                logging.INFO,
                "task_started",
                task_id=task.id,
                task_type=task.task_type,
                attempt=task.attempt,
            )
            outcome = await self._execute(running)
            if outcome is None:
                return
            report = asyncio.create_task(self._report(task, ctx, outcome))
            self._reports.add(report)
            report.add_done_callback(self._reports.discard)
            await asyncio.shield(report)
        finally:
            self._in_flight.pop(task.id, None)
            state.slots.release()
            reset_correlation_id(correlation)

    async def _execute(self, running: _Running) -> _Outcome | None:
        """Run the handler; None when there is nothing to report (cancelled on the server)."""
        task, ctx = running.task, running.ctx
        handler = self._handlers.get(task.task_type)
        if handler is None:
            return _Outcome(
                ok=False,
                error=f"agent {self.agent_id!r} has no handler for task type {task.task_type!r}",
                retryable=False,
            )
        running.handler = asyncio.create_task(_call_handler(handler, task.payload, ctx))
        done, _ = await asyncio.wait({running.handler}, timeout=task.timeout_s)
        if not done:
            ctx._mark_cancelled()
            running.handler.cancel()
            await asyncio.wait({running.handler})
            return _Outcome(
                ok=False, error=f"handler ran past the task timeout of {task.timeout_s}s"
            )
        if running.handler.cancelled():
            if running.cancelled_by_server:
                return None
            return _Outcome(ok=False, error="agent shut down before the task finished")
        exc = running.handler.exception()
        if exc is not None:
            message = str(exc) or type(exc).__name__
            if isinstance(exc, PermanentError):
                return _Outcome(ok=False, error=message, retryable=False)
            _log(
                logging.WARNING,
                "handler_raised",
                task_id=task.id,
                attempt=task.attempt,
                error_type=type(exc).__name__,
                error=message,
            )
            return _Outcome(ok=False, error=message, retryable=True)
        result = running.handler.result()
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return _Outcome(ok=False, error=f"result is not JSON-encodable: {exc}", retryable=False)
        return _Outcome(ok=True, result=result)

    async def _report(self, task: Task, ctx: TaskContext, outcome: _Outcome) -> None:
        """Complete or fail the attempt, retrying while the server cannot be reached.

        Gives up once the lease has surely expired: the reaper has re-queued the task by
        then and the write would be rejected anyway.
        """
        lease = task.lease_token or ""
        lease_left_s = (task.lease_expires_at or 0.0) - time.time()
        deadline = time.monotonic() + max(60.0, lease_left_s + 5.0)
        backoff = self._backoff()
        while True:
            try:
                if outcome.ok:
                    await self._complete(task, outcome.result, lease, ctx.cost)
                    _log(logging.INFO, "task_completed", task_id=task.id, attempt=task.attempt)
                else:
                    await self._http.fail_task(
                        task.id, outcome.error, lease_token=lease, retryable=outcome.retryable
                    )
                    _log(
                        logging.INFO,
                        "task_failed",
                        task_id=task.id,
                        attempt=task.attempt,
                        retryable=outcome.retryable,
                        error=outcome.error,
                    )
                return
            except (ConflictError, TaskCancelledError, NotFoundError) as exc:
                _log(
                    logging.WARNING,
                    "task_report_rejected",
                    task_id=task.id,
                    attempt=task.attempt,
                    reason=str(exc),
                )
                return
            except ValidationError as exc:
                if not outcome.ok:
                    _log(logging.ERROR, "task_report_rejected", task_id=task.id, reason=str(exc))
                    return
                outcome = _Outcome(
                    ok=False, error=f"result rejected by the server: {exc}", retryable=False
                )
            except TRANSIENT_ERRORS as exc:
                delay_s = backoff.next_delay_s(exc)
                if time.monotonic() + delay_s > deadline:
                    _log(logging.ERROR, "task_report_gave_up", task_id=task.id, error=str(exc))
                    return
                _log(
                    logging.WARNING,
                    "task_report_retry",
                    task_id=task.id,
                    error=str(exc),
                    retry_in_s=round(delay_s, 2),
                )
                await asyncio.sleep(delay_s)
            except ControlPlaneError as exc:
                _log(logging.ERROR, "task_report_failed", task_id=task.id, error=str(exc))
                if isinstance(exc, AuthenticationError):
                    self._fatal_error(exc)
                return


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency on Linux and macOS: it
    makes each request and store round trip cheaper), else ``None`` (asyncio's own)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _call_handler(handler: Handler, payload: Any, ctx: TaskContext) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(payload, ctx)
    result = await asyncio.to_thread(handler, payload, ctx)
    if inspect.isawaitable(result):
        awaited: Awaitable[Any] = result
        return await awaited
    return result


async def _cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
