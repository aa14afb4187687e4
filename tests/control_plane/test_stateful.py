"""Random sequences of every operation keep every task in exactly one place.

A hypothesis state machine drives two coordinators on one store (each rule picks one)
through submits, registrations, claims, completions and failures (with the current
lease or a stale one), heartbeats, cancels, retries, clock jumps and reaps. After every
step it reads the whole state back and checks the invariants a user relies on:

* every task is in exactly one place: ``get_task``, the per-status listings and
  ``counts()`` agree, and the counts add up to the tasks submitted (nothing expires:
  the result TTL is far longer than any clock jump);
* a running task is leased to exactly one agent, which lists it; no agent holds more
  than its ``max_concurrent_tasks``;
* attempts are accounted for: each ended attempt left exactly one error, numbered in
  order, unless it completed or was cancelled;
* a completed or cancelled task never changes again; a failed one only by a retry;
* a lease token is accepted at most once, and only while it is the task's current one;
* a claim hands out the best claimable task (priority, then submit order) that the
  agent's capabilities allow, and never refuses one to an agent that may take it.

The API is async; each machine runs it on an event loop of its own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aragora.control_plane import (
    AgentInfo,
    AgentNotFoundError,
    AgentStatus,
    BreakerState,
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    InvalidStateError,
    LeaseLostError,
    Task,
    TaskCancelledError,
    TaskPriority,
    TaskStatus,
)

T = TypeVar("T")

AGENTS = ("agent-0", "agent-1", "agent-2")
TASK_CAPSETS: tuple[tuple[str, ...], ...] = ((), ("gpu",), ("gpu", "web"), ("web",))
AGENT_CAPSETS: tuple[tuple[str, ...], ...] = ((), ("gpu",), ("gpu", "web"), ("web",))
CLOCK_JUMPS_S = (0.4, 2.7, 7.9, 21.3, 31.7, 95.1)
HEARTBEAT_TIMEOUT_S = 30.0
MACHINE_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
via = st.integers(min_value=0, max_value=1)  # which of the two coordinators acts
agent_pick = st.integers(min_value=0, max_value=len(AGENTS) - 1)  # one of those registered


@dataclass(frozen=True)
class Lease:
    task_id: str
    token: str


@dataclass
class ModelTask:
    order: int
    priority: TaskPriority
    max_retries: int
    attempts_allowed: int
    failed_for_good: bool = False  # its last attempt failed as non-retryable
    settled: Task | None = None  # the task as first seen terminal (until a retry)


@dataclass
class ModelAgent:
    capabilities: tuple[str, ...]
    max_concurrent_tasks: int
    draining: bool = False
    # ids of tasks cancelled while it ran them, due at its next heartbeat; those from
    # before a re-registration may or may not still be reported.
    notices_due: set[str] = field(default_factory=set)
    notices_maybe: set[str] = field(default_factory=set)


class ControlPlaneMachine(RuleBasedStateMachine):
    tasks = Bundle("tasks")
    leases = Bundle("leases")

    def __init__(self, config: ControlPlaneConfig) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.cps = [ControlPlaneCoordinator(config, run_reaper=False) for _ in range(2)]
        self.offset_s = 0.0
        self.model_tasks: dict[str, ModelTask] = {}
        self.model_agents: dict[str, ModelAgent] = {}
        self.issued_tokens: set[str] = set()
        self.accepted_tokens: set[str] = set()
        self.snapshot: dict[str, Task] = {}
        self.snapshot_agents: dict[str, AgentInfo] = {}
        try:
            for cp in self.cps:
                self.run(cp.start())
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        try:
            for cp in self.cps:
                self.run(cp.close())
            self.run(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    # -- helpers ---------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def raises(self, coro: Coroutine[Any, Any, Any], *expected: type[Exception]) -> Exception:
        try:
            value = self.run(coro)
        except expected as exc:
            return exc
        raise AssertionError(f"expected {[e.__name__ for e in expected]}, got {value!r}")

    def check_released(self, agent: str, error: str) -> None:
        """The agent's tasks ended their attempts with ``error``."""
        held = self.snapshot_agents[agent].running_task_ids
        for task_id in held:
            task = self.run(self.cps[0].get_task(task_id))
            assert task.status in (TaskStatus.PENDING, TaskStatus.FAILED), task
            assert task.errors[-1].error == error and task.errors[-1].agent_id == agent

    # -- tasks -----------------------------------------------------------------------
    @rule(
        target=tasks,
        cp=via,
        batch=st.lists(
            st.tuples(
                st.sampled_from(list(TaskPriority)),
                st.sampled_from(TASK_CAPSETS),
                st.integers(min_value=0, max_value=2),
                st.sampled_from([5.0, 40.0]),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def submit(
        self, cp: int, batch: list[tuple[TaskPriority, tuple[str, ...], int, float]]
    ) -> MultipleResults[str]:
        """Submit a few tasks (priority, required capabilities, retries, timeout)."""
        ids = []
        for priority, caps, max_retries, timeout_s in batch:
            order = len(self.model_tasks)
            task_id = self.run(
                self.cps[cp].submit_task(
                    "work",
                    {"order": order},
                    caps,
                    priority,
                    timeout_s=timeout_s,
                    max_retries=max_retries,
                )
            )
            assert task_id not in self.model_tasks
            self.model_tasks[task_id] = ModelTask(order, priority, max_retries, 1 + max_retries)
            ids.append(task_id)
        return multiple(*ids)

    def _registered(self, pick: int) -> str:
        names = sorted(self.model_agents)
        return names[pick % len(names)]

    @precondition(lambda self: bool(self.model_agents and self.model_tasks))
    @rule(target=leases, cp=via, pick=agent_pick)
    def claim(self, cp: int, pick: int) -> MultipleResults[Lease]:
        lease = self._claim(cp, self._registered(pick))
        return multiple() if lease is None else multiple(lease)

    @precondition(lambda self: bool(self.model_agents and self.model_tasks))
    @rule(
        target=leases,
        cp=via,
        pick=agent_pick,
        outcome=st.sampled_from(["complete", "fail", "fail for good"]),
    )
    def claim_and_finish(self, cp: int, pick: int, outcome: str) -> MultipleResults[Lease]:
        """An agent at work: claim, then end the attempt at once (the lease stays
        around, stale, for later rules)."""
        lease = self._claim(cp, self._registered(pick))
        if lease is None:
            return multiple()
        self.every_task_is_in_exactly_one_place()
        if outcome == "complete":
            self.complete(cp, lease)
        else:
            self.fail(cp, lease, retryable=outcome == "fail")
        return multiple(lease)

    @rule(cp=via, agent=st.sampled_from(AGENTS))
    def claim_as_an_unknown_agent(self, cp: int, agent: str) -> None:
        if agent not in self.model_agents:
            self.raises(self.cps[cp].claim_task(agent), AgentNotFoundError)

    def _claim(self, cp: int, agent: str) -> Lease | None:
        model = self.model_agents[agent]
        breaker = self.run(self.cps[cp].get_breaker(agent))
        info = self.snapshot_agents[agent]
        task = self.run(self.cps[cp].claim_task(agent))
        may_claim = (
            info.status not in (AgentStatus.OFFLINE, AgentStatus.DRAINING)
            and len(info.running_task_ids) < info.max_concurrent_tasks
        )
        ready = [
            t
            for t in self.snapshot.values()
            if t.status is TaskStatus.PENDING
            and t.available_at is None
            and set(t.required_capabilities) <= set(model.capabilities)
        ]
        if task is None:
            assert not (may_claim and breaker.state is BreakerState.CLOSED and ready), (
                f"{agent} may claim and {[t.id for t in ready]} are ready, but it got nothing"
            )
            return None

        assert may_claim, f"{agent} ({info.status}) should not have got a task"
        before = self.snapshot[task.id]
        assert before.status is TaskStatus.PENDING, before
        assert task.started_at is not None
        assert before.available_at is None or before.available_at <= task.started_at
        assert set(task.required_capabilities) <= set(model.capabilities)
        assert task.status is TaskStatus.RUNNING and task.agent_id == agent
        assert task.attempt == before.attempt + 1
        rank = (task.priority.rank, self.model_tasks[task.id].order)
        better = [t.id for t in ready if (t.priority.rank, self.model_tasks[t.id].order) < rank]
        assert not better, f"claimed {task.id} while better tasks {better} were ready"
        assert task.lease_token is not None and task.lease_token not in self.issued_tokens
        self.issued_tokens.add(task.lease_token)
        return Lease(task.id, task.lease_token)

    def _end_attempt(
        self, lease: Lease, outcome: Coroutine[Any, Any, Task]
    ) -> tuple[Task, Task] | None:
        """Run ``outcome`` (a complete or fail with ``lease``); the task before and after,
        or None when the store rightly refused the lease."""
        before = self.snapshot[lease.task_id]
        current = before.status is TaskStatus.RUNNING and before.lease_token == lease.token
        try:
            after = self.run(outcome)
        except TaskCancelledError:
            assert before.status is TaskStatus.CANCELLED, before
            return None
        except LeaseLostError:
            assert not current, f"the current lease of {before} was refused"
            return None
        assert current, f"lease {lease} accepted, but the task was {before}"
        assert lease.token not in self.accepted_tokens, f"lease {lease} accepted twice"
        self.accepted_tokens.add(lease.token)
        assert after.lease_token is None
        return before, after

    @rule(cp=via, lease=leases)
    def complete(self, cp: int, lease: Lease) -> None:
        result = {"lease": lease.token}
        ended = self._end_attempt(
            lease, self.cps[cp].complete_task(lease.task_id, result, lease_token=lease.token)
        )
        if ended is not None:
            _, after = ended
            assert after.status is TaskStatus.COMPLETED and after.result == result

    @rule(cp=via, lease=leases, retryable=st.booleans())
    def fail(self, cp: int, lease: Lease, retryable: bool) -> None:
        error = f"broken ({'retryable' if retryable else 'final'})"
        ended = self._end_attempt(
            lease,
            self.cps[cp].fail_task(
                lease.task_id, error, lease_token=lease.token, retryable=retryable
            ),
        )
        if ended is None:
            return
        before, after = ended
        model = self.model_tasks[lease.task_id]
        assert after.errors[-1].error == error and after.errors[-1].attempt == before.attempt
        if retryable and before.attempt < model.attempts_allowed:
            assert after.status is TaskStatus.PENDING and after.available_at is not None
        else:
            assert after.status is TaskStatus.FAILED
            model.failed_for_good = not retryable

    @rule(cp=via, task_id=tasks)
    def complete_with_a_forged_lease(self, cp: int, task_id: str) -> None:
        before = self.snapshot[task_id]
        expected = TaskCancelledError if before.status is TaskStatus.CANCELLED else LeaseLostError
        self.raises(
            self.cps[cp].complete_task(task_id, "forged", lease_token="forged-token"), expected
        )

    @rule(cp=via, task_id=tasks)
    def cancel(self, cp: int, task_id: str) -> None:
        before = self.snapshot[task_id]
        if before.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            self.raises(self.cps[cp].cancel_task(task_id), InvalidStateError)
            return
        after = self.run(self.cps[cp].cancel_task(task_id))
        assert after.status is TaskStatus.CANCELLED and after.lease_token is None
        if before.status is TaskStatus.CANCELLED:
            assert after.finished_at == before.finished_at
        if before.status is TaskStatus.RUNNING:
            assert before.agent_id is not None
            self.model_agents[before.agent_id].notices_due.add(task_id)

    @rule(cp=via, task_id=tasks)
    def retry(self, cp: int, task_id: str) -> None:
        before = self.snapshot[task_id]
        if before.status is not TaskStatus.FAILED:
            self.raises(self.cps[cp].retry_task(task_id), InvalidStateError)
            return
        after = self.run(self.cps[cp].retry_task(task_id))
        assert after.status is TaskStatus.PENDING and after.error is None
        assert (after.attempt, after.errors) == (before.attempt, before.errors)
        model = self.model_tasks[task_id]
        model.attempts_allowed = before.attempt + 1 + model.max_retries
        model.failed_for_good = False
        model.settled = None

    # -- agents ----------------------------------------------------------------------
    @initialize(
        caps=st.lists(st.sampled_from(AGENT_CAPSETS), min_size=len(AGENTS), max_size=len(AGENTS)),
        limits=st.lists(
            st.integers(min_value=1, max_value=3), min_size=len(AGENTS), max_size=len(AGENTS)
        ),
    )
    def register_every_agent(self, caps: list[tuple[str, ...]], limits: list[int]) -> None:
        for agent, agent_caps, limit in zip(AGENTS, caps, limits, strict=True):
            self.register(0, agent, agent_caps, limit)

    @rule(
        cp=via,
        agent=st.sampled_from(AGENTS),
        caps=st.sampled_from(AGENT_CAPSETS),
        max_concurrent_tasks=st.integers(min_value=1, max_value=3),
    )
    def register(
        self, cp: int, agent: str, caps: tuple[str, ...], max_concurrent_tasks: int
    ) -> None:
        info = self.run(
            self.cps[cp].register_agent(
                agent, caps, model="m", max_concurrent_tasks=max_concurrent_tasks
            )
        )
        assert info.running_task_ids == () and info.status is AgentStatus.IDLE
        if agent in self.model_agents:
            self.check_released(agent, "agent re-registered")
            old = self.model_agents[agent]
            notices = old.notices_due | old.notices_maybe
        else:
            notices = set()
        self.model_agents[agent] = ModelAgent(caps, max_concurrent_tasks, notices_maybe=notices)

    @rule(cp=via, agent=st.sampled_from(AGENTS))
    def deregister(self, cp: int, agent: str) -> None:
        if agent not in self.model_agents:
            self.raises(self.cps[cp].deregister_agent(agent), AgentNotFoundError)
            return
        self.run(self.cps[cp].deregister_agent(agent))
        self.check_released(agent, "agent deregistered")
        del self.model_agents[agent]
        self.raises(self.cps[cp].get_agent(agent), AgentNotFoundError)

    @rule(
        cp=via,
        agent=st.sampled_from(AGENTS),
        status=st.sampled_from([None, AgentStatus.DRAINING, AgentStatus.IDLE]),
    )
    def heartbeat(self, cp: int, agent: str, status: AgentStatus | None) -> None:
        model = self.model_agents.get(agent)
        if model is None:
            self.raises(self.cps[cp].heartbeat(agent, status=status), AgentNotFoundError)
            return
        beat = self.run(self.cps[cp].heartbeat(agent, status=status))
        if status is not None:
            model.draining = status is AgentStatus.DRAINING
        reported = set(beat.cancelled_task_ids)
        assert model.notices_due <= reported <= model.notices_due | model.notices_maybe, (
            f"cancel notices {reported}, expected {model.notices_due}"
        )
        model.notices_due.clear()
        model.notices_maybe.clear()
        held = len(beat.agent.running_task_ids)
        expected = (
            AgentStatus.DRAINING
            if model.draining
            else AgentStatus.BUSY
            if held
            else AgentStatus.IDLE
        )
        assert beat.agent.status is expected

    # -- time and the reaper ---------------------------------------------------------
    @rule(seconds=st.sampled_from(CLOCK_JUMPS_S))
    def advance_clock(self, seconds: float) -> None:
        self.offset_s += seconds
        for cp in self.cps:
            cp.store.set_clock_offset(self.offset_s)

    @rule(cp=via)
    def reap(self, cp: int) -> None:
        """After a pass nothing overdue is left: no silent agent still in service, no
        running attempt past its lease, no delayed task past its backoff."""
        # The Redis store keeps times in whole milliseconds: allow for the rounding.
        now = self.run(self.cps[cp].store.now()) - 0.002
        report = self.run(self.cps[cp].reap())
        assert report.tasks_expired == 0
        for task in self.run(self.cps[cp].list_tasks(limit=1000)).tasks:
            if task.status is TaskStatus.RUNNING:
                assert task.lease_expires_at is not None and task.lease_expires_at > now, task
            if task.status is TaskStatus.PENDING:
                assert task.available_at is None or task.available_at > now, task
        for info in self.run(self.cps[cp].list_agents()):
            if info.status is not AgentStatus.OFFLINE:
                assert info.last_heartbeat_at >= now - HEARTBEAT_TIMEOUT_S, info

    # -- the invariant ---------------------------------------------------------------
    @invariant()
    def every_task_is_in_exactly_one_place(self) -> None:
        self.run(self._check_places())

    async def _check_places(self) -> None:
        cp = self.cps[0]
        tasks = {task_id: await cp.get_task(task_id) for task_id in self.model_tasks}
        listed: dict[TaskStatus, set[str]] = {}
        for status in TaskStatus:
            page = await cp.list_tasks(status, limit=1000)
            assert page.next_cursor is None
            listed[status] = {t.id for t in page.tasks}
            assert all(t.status is status for t in page.tasks)
        for task_id, task in tasks.items():
            places = [s for s in TaskStatus if task_id in listed[s]]
            assert places == [task.status], f"{task_id} is {task.status} but listed in {places}"
        assert set(itertools.chain(*listed.values())) == set(self.model_tasks)

        counts = await cp.store.counts("default")
        assert counts.pending == len(listed[TaskStatus.PENDING])
        assert counts.running == len(listed[TaskStatus.RUNNING])
        assert counts.completed == len(listed[TaskStatus.COMPLETED])
        assert counts.failed == len(listed[TaskStatus.FAILED])
        assert counts.cancelled == len(listed[TaskStatus.CANCELLED])
        assert counts.total == len(self.model_tasks)
        assert 0 <= counts.delayed <= counts.pending

        agents = {a.agent_id: a for a in await cp.list_agents()}
        assert set(agents) == set(self.model_agents)
        holders: dict[str, list[str]] = {}
        for info in agents.values():
            assert len(info.running_task_ids) <= info.max_concurrent_tasks, info
            for task_id in info.running_task_ids:
                holders.setdefault(task_id, []).append(info.agent_id)
            model = self.model_agents[info.agent_id]
            if info.status is not AgentStatus.OFFLINE:
                assert (info.status is AgentStatus.DRAINING) == model.draining, info
        for task_id, task in tasks.items():
            if task.status is TaskStatus.RUNNING:
                assert holders.get(task_id) == [task.agent_id], (task, holders.get(task_id))
                assert task.lease_token is not None and task.lease_expires_at is not None
            else:
                assert task_id not in holders, (task, holders[task_id])
                assert task.lease_token is None, task
            self._check_attempts(task)
            self._check_settled(task)

        self.snapshot = tasks
        self.snapshot_agents = agents

    def _check_attempts(self, task: Task) -> None:
        model = self.model_tasks[task.id]
        assert [e.attempt for e in task.errors] == list(range(1, len(task.errors) + 1)), task
        unfinished = task.attempt - len(task.errors)  # attempts that ended without an error
        if task.status in (TaskStatus.PENDING, TaskStatus.FAILED):
            assert unfinished == 0, task
        elif task.status in (TaskStatus.RUNNING, TaskStatus.COMPLETED):
            assert unfinished == 1, task
        else:
            assert unfinished in (0, 1), task
        if task.status is TaskStatus.PENDING:
            assert task.attempt < model.attempts_allowed, task
        if task.status is TaskStatus.FAILED:
            assert task.error == task.errors[-1].error
            assert model.failed_for_good or task.attempt == model.attempts_allowed, task

    def _check_settled(self, task: Task) -> None:
        model = self.model_tasks[task.id]
        if model.settled is None:
            if task.is_terminal:
                model.settled = task
            return
        settled = model.settled
        assert (task.status, task.result, task.errors, task.finished_at) == (
            settled.status,
            settled.result,
            settled.errors,
            settled.finished_at,
        ), f"a finished task changed: {settled} -> {task}"


def _machine_config(
    config: ControlPlaneConfig, store_kind: str, tmp_path: Path, n: int
) -> ControlPlaneConfig:
    """A fresh store per example: its own SQLite file, or a key prefix under the test's
    (so the test's clean-up removes it)."""
    settings_for_test = {
        "heartbeat_timeout": HEARTBEAT_TIMEOUT_S,
        "heartbeat_interval": 10.0,
        "retry_backoff_base_s": 2.0,
        "retry_backoff_max_s": 20.0,
        "result_ttl_s": 10.0**9,
        "breaker_min_calls": 4,
        "breaker_open_s": 20.0,
    }
    if store_kind == "sqlite":
        return config.replace(
            store_url=f"sqlite:///{tmp_path / f'example-{n}' / 'state.db'}", **settings_for_test
        )
    return config.replace(key_prefix=f"{config.key_prefix}example-{n}:", **settings_for_test)


def test_random_operation_sequences_keep_every_task_in_exactly_one_place(
    config: ControlPlaneConfig, store_kind: str, tmp_path: Path
) -> None:
    examples = itertools.count()

    class Machine(ControlPlaneMachine):
        def __init__(self) -> None:
            super().__init__(_machine_config(config, store_kind, tmp_path, next(examples)))

    run_state_machine_as_test(Machine, settings=MACHINE_SETTINGS)
