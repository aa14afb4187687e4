"""AlertEngine: evaluates the alert rules on a schedule and on events, and notifies sinks.

Every instance of a deployment may run an engine against the shared store. Each
evaluation reads the facts (agents, breakers, queues, failed tasks, instances), and
every change of an alert's state is one compare-and-set in the store
(:mod:`aragora.alerts.state`), so among all engines exactly one wins each transition
and notifies: an alert fires once and resolves once per incident.

Events reach the engine without waiting for the schedule:

* the coordinator's alerts (``budget.soft_limit``) through ``add_alert_hook``;
* finished tasks handed to :meth:`AlertEngine.observe_task` (a task that ended FAILED
  is dead-lettered at once).

The store being unreachable cannot be recorded in the store: each engine reports its
own instance's view (key ``store_unreachable:<instance id>``) after
``store_unreachable_after_failures`` failed evaluations in a row, and resolves it at
the first evaluation that reaches the store again.

Every event is logged (:class:`~aragora.alerts.sinks.LogSink`) and sent to the other
sinks (webhooks, Python hooks), which never block the evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from aragora.alerts.models import (
    AlertEvent,
    AlertKind,
    AlertRecord,
    AlertSeverity,
    AlertStatus,
    AlertThresholds,
    Condition,
    alert_key,
)
from aragora.alerts.rules import RULES, EvaluationContext, RuleOutcome, dead_letter_condition
from aragora.alerts.sinks import AlertHook, AlertSink, HookSink, LogSink
from aragora.alerts.state import AlertStateStore, create_alert_state_store
from aragora.control_plane.backoff import LoopBackoff
from aragora.control_plane.errors import ControlPlaneError, StoreUnavailableError
from aragora.control_plane.models import Alert, Task, TaskStatus

if TYPE_CHECKING:
    from aragora.control_plane.coordinator import ControlPlaneCoordinator
    from aragora.control_plane.instances import InstanceRegistry

logger = logging.getLogger(__name__)

BUDGET_SOFT_LIMIT_KIND: Final = "budget.soft_limit"
_RECENT_EVENTS_MAX: Final = 10_000


class AlertEngine:
    """Alert rules over one coordinator's store, delivered to sinks; see the module
    docstring. Use ``async with`` (or ``start`` / ``close``).

    ``instances`` enables the instance-lost rule; ``run_schedule=False`` leaves
    evaluation to explicit :meth:`evaluate` calls (tests, or a caller's own loop).
    """

    def __init__(
        self,
        coordinator: ControlPlaneCoordinator,
        *,
        thresholds: AlertThresholds | None = None,
        sinks: Sequence[AlertSink] = (),
        hooks: Sequence[AlertHook] = (),
        instances: InstanceRegistry | None = None,
        instance_id: str | None = None,
        run_schedule: bool = True,
    ) -> None:
        self.thresholds = thresholds or AlertThresholds()
        self.instance_id = instance_id or (
            instances.instance_id if instances is not None else uuid.uuid4().hex
        )
        self._store = coordinator.store
        self.backoff = LoopBackoff(
            "alert evaluation",
            self.thresholds.evaluate_interval_s,
            max_s=coordinator.config.loop_backoff_max_s,
            log=logger,
        )
        """Spaces the scheduled evaluations out while the store does not answer."""
        self._instances = instances
        self._state: AlertStateStore | None = None
        self._sinks: list[AlertSink] = [
            LogSink(),
            *sinks,
            *(HookSink(hook) for hook in hooks),
        ]
        self._run_schedule = run_schedule
        self._evaluating = asyncio.Lock()
        self._recent_events: OrderedDict[str, None] = OrderedDict()
        self._store_failures = 0
        self._store_alert: AlertEvent | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        coordinator.add_alert_hook(self._on_coordinator_alert)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started or self._closed:
            return
        self._started = True
        for sink in self._sinks:
            await sink.start()
        if self._run_schedule:
            self._loop = asyncio.create_task(self._evaluate_forever(), name="aragora-alerts")

    async def close(self) -> None:
        """Stop evaluating, finish event work in flight, then close (drain) the sinks.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await self.flush()
        for sink in self._sinks:
            try:
                await sink.close()
            except Exception:
                logger.exception("closing alert sink %r failed", sink)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def add_hook(self, hook: AlertHook) -> None:
        """Notify ``hook`` of every alert event this engine sends from now on."""
        self._sinks.append(HookSink(hook))

    async def flush(self) -> None:
        """Wait for event work started by hooks and :meth:`observe_task`."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def list_firing(self) -> list[AlertRecord]:
        """Every firing condition alert of the deployment, as stored."""
        return await self._state_store().list_firing()

    # -- evaluation ------------------------------------------------------------------------
    async def evaluate(self) -> list[AlertEvent]:
        """One pass over every rule; the events this engine sent (the transitions it
        won). Safe to run on many instances at once."""
        async with self._evaluating:
            try:
                await self._store.ping()
                observed_at = await self._store.now()
            except StoreUnavailableError as exc:
                return self._store_unreachable(exc)
            events = self._store_reachable()
            state = self._state_store()
            try:
                firing = {record.key for record in await state.list_firing()}
            except ControlPlaneError:
                logger.warning("could not read firing alerts; skipping this pass", exc_info=True)
                return events
            ctx = EvaluationContext(self._store, self.thresholds, observed_at, self._instances)
            for kind, rule in RULES.items():
                if kind.value in self.thresholds.disabled_rules:
                    continue
                try:
                    outcome = await rule(ctx)
                    events += await self._apply(outcome, firing, observed_at)
                except ControlPlaneError:
                    logger.warning("alert rule %s failed; will try again", kind, exc_info=True)
            return events

    async def _apply(
        self, outcome: RuleOutcome, firing: set[str], observed_at: float
    ) -> list[AlertEvent]:
        state = self._state_store()
        events: list[AlertEvent] = []
        active = {condition.key for condition in outcome.active}
        for condition in outcome.active:
            if condition.key in firing:
                continue
            record = await state.fire(
                condition,
                observed_at=observed_at,
                one_shot=False,
                retention_s=self.thresholds.resolved_retention_s,
            )
            if record is not None:
                events.append(self._dispatch(record, record.fired_at))
        for key in sorted(firing - active):
            if not any(key.startswith(prefix) for prefix in outcome.scopes):
                continue
            record = await state.resolve(
                key, observed_at=observed_at, retention_s=self.thresholds.resolved_retention_s
            )
            if record is not None:
                events.append(self._dispatch(record, record.resolved_at or observed_at))
        for condition in outcome.events:
            event = await self._fire_event(condition, observed_at)
            if event is not None:
                events.append(event)
        return events

    async def _fire_event(self, condition: Condition, observed_at: float) -> AlertEvent | None:
        """Fire an event alert unless this engine (or, through the store, any engine) has
        fired it already."""
        if condition.key in self._recent_events:
            return None
        record = await self._state_store().fire(
            condition,
            observed_at=observed_at,
            one_shot=True,
            retention_s=self.thresholds.event_retention_s,
        )
        self._remember_event(condition.key)
        return None if record is None else self._dispatch(record, record.fired_at)

    def _remember_event(self, key: str) -> None:
        self._recent_events[key] = None
        while len(self._recent_events) > _RECENT_EVENTS_MAX:
            self._recent_events.popitem(last=False)

    async def _evaluate_forever(self) -> None:
        backoff = self.backoff
        while True:
            try:
                await self.evaluate()
            except ControlPlaneError as exc:
                delay_s = backoff.failed(exc)
            except Exception as exc:
                logger.exception("alert evaluation failed; will try again")
                delay_s = backoff.failed(exc)
            else:
                # evaluate() reports an unreachable store as an alert, not by raising.
                if self._store_failures:
                    delay_s = backoff.failed(StoreUnavailableError("the store does not answer"))
                else:
                    delay_s = backoff.succeeded()
            await backoff.sleep(delay_s)

    # -- events ----------------------------------------------------------------------------
    def observe_task(self, task: Task) -> None:
        """Hand over a task just returned by complete / fail / cancel: one that ended
        FAILED is dead-lettered now rather than at the next evaluation. Never blocks."""
        if task.status is not TaskStatus.FAILED or self._closed:
            return
        if AlertKind.TASK_DEAD_LETTERED.value in self.thresholds.disabled_rules:
            return
        observed_at = task.finished_at if task.finished_at is not None else task.created_at
        self._spawn(self._fire_event_safely(dead_letter_condition(task), observed_at))

    def _on_coordinator_alert(self, alert: Alert) -> None:
        if self._closed:
            return
        if alert.kind == BUDGET_SOFT_LIMIT_KIND:
            if AlertKind.BUDGET_SOFT_LIMIT.value in self.thresholds.disabled_rules:
                return
            period = str(alert.details.get("period", ""))
            condition = Condition(
                key=alert_key(AlertKind.BUDGET_SOFT_LIMIT, alert.workspace_id, period),
                kind=AlertKind.BUDGET_SOFT_LIMIT,
                severity=AlertSeverity.WARNING,
                summary=(
                    f"workspace {alert.workspace_id} reached the soft limit of its"
                    f" budget for {period}"
                ),
                workspace_id=alert.workspace_id,
                details=dict(alert.details),
            )
        else:
            condition = Condition(
                key=alert_key(alert.kind, alert.workspace_id, str(round(alert.at * 1000))),
                kind=alert.kind,
                severity=AlertSeverity.WARNING,
                summary=f"{alert.kind} in workspace {alert.workspace_id}",
                workspace_id=alert.workspace_id,
                details=dict(alert.details),
            )
        self._spawn(self._fire_event_safely(condition, alert.at))

    async def _fire_event_safely(self, condition: Condition, observed_at: float) -> None:
        try:
            await self._fire_event(condition, observed_at)
        except StoreUnavailableError:
            # The event happened once (the store raised it in one transition); without
            # the store to record it, deliver it rather than lose it.
            logger.warning("alert state not recorded (store unavailable): %s", condition.key)
            now = time.time()
            record = AlertRecord(
                condition.key,
                condition.kind,
                AlertStatus.FIRING,
                condition.severity,
                condition.summary,
                condition.workspace_id,
                condition.details,
                now,
                None,
                True,
            )
            self._dispatch(record, now)
        except Exception:
            logger.exception("event alert %s failed", condition.key)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- store reachability ----------------------------------------------------------------
    def _store_unreachable(self, exc: Exception) -> list[AlertEvent]:
        self._store_failures += 1
        enabled = AlertKind.STORE_UNREACHABLE.value not in self.thresholds.disabled_rules
        if (
            not enabled
            or self._store_alert is not None
            or self._store_failures < self.thresholds.store_unreachable_after_failures
        ):
            return []
        now = time.time()
        record = AlertRecord(
            key=alert_key(AlertKind.STORE_UNREACHABLE, self.instance_id),
            kind=AlertKind.STORE_UNREACHABLE,
            status=AlertStatus.FIRING,
            severity=AlertSeverity.CRITICAL,
            summary=f"instance {self.instance_id} cannot reach the store",
            workspace_id=None,
            details={"error": str(exc)[:1000], "failed_evaluations": self._store_failures},
            fired_at=now,
            resolved_at=None,
            one_shot=False,
        )
        event = self._dispatch(record, now)
        self._store_alert = event
        return [event]

    def _store_reachable(self) -> list[AlertEvent]:
        self._store_failures = 0
        firing, self._store_alert = self._store_alert, None
        if firing is None:
            return []
        now = time.time()
        record = AlertRecord(
            key=firing.key,
            kind=firing.kind,
            status=AlertStatus.RESOLVED,
            severity=firing.severity,
            summary=firing.summary,
            workspace_id=None,
            details=firing.details,
            fired_at=firing.fired_at,
            resolved_at=now,
            one_shot=False,
        )
        return [self._dispatch(record, now)]

    # -- delivery --------------------------------------------------------------------------
    def _dispatch(self, record: AlertRecord, at: float) -> AlertEvent:
        event = AlertEvent.from_record(record, at, self.instance_id)
        for sink in self._sinks:
            try:
                sink.send(event)
            except Exception:
                logger.exception("alert sink %r failed", sink)
        return event

    def _state_store(self) -> AlertStateStore:
        if self._state is None:
            self._state = create_alert_state_store(self._store)
        return self._state
