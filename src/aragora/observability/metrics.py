"""Prometheus metrics of the control plane, in a registry of their own.

:class:`ControlPlaneMetrics` owns a dedicated :class:`~prometheus_client.CollectorRegistry`
(never the process-global one, so several coordinators or test cases never collide)
holding:

``aragora_tasks_{submitted,completed,failed,cancelled,retried}_total{workspace,priority}``
    counters fed by :meth:`~ControlPlaneMetrics.record_submitted` and
    :meth:`~ControlPlaneMetrics.record_finished` (and :meth:`~ControlPlaneMetrics.
    record_reaped` for what the reaper requeued or failed)
``aragora_task_latency_seconds{priority,status}``
    histogram of submit -> finish of terminal tasks (store clock)
``aragora_task_run_seconds{priority,status}``
    histogram of start of the last attempt -> finish
``aragora_http_requests_total{method,route,status}`` and
``aragora_http_request_duration_seconds{method,route}``
    for the server to call with the route *template* (``/api/tasks/{task_id}``)
``aragora_store_operation_duration_seconds{operation,outcome}``
    store latency by operation (:meth:`~ControlPlaneMetrics.time_store_operation`,
    :func:`instrument_store`)

plus the gauges the :class:`~aragora.observability.collector.CoordinatorCollector`
computes from the store at scrape time (:meth:`~ControlPlaneMetrics.watch_store`,
:meth:`~ControlPlaneMetrics.scrape`).

Labels are bounded: never task, agent or token ids. Workspaces are a label, but at most
``max_workspace_labels`` distinct ones per metrics object; the rest are counted under
``_other``. Methods outside the standard set become ``OTHER``; a request that matched
no route is ``<unmatched>``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from aragora.control_plane.models import ReapReport, Task, TaskStatus

if TYPE_CHECKING:
    from aragora.control_plane.instances import InstanceRegistry
    from aragora.observability.collector import CoordinatorCollector
    from aragora.store.base import Store

OTHER_WORKSPACE: Final = "_other"
UNKNOWN_PRIORITY: Final = "unknown"
UNMATCHED_ROUTE: Final = "<unmatched>"
DEFAULT_MAX_WORKSPACE_LABELS: Final = 100

TASK_SECONDS_BUCKETS: Final = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
HTTP_SECONDS_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
STORE_SECONDS_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

STORE_OPERATIONS: Final = (
    "ping",
    "submit",
    "submit_many",
    "claim",
    "complete",
    "complete_many",
    "fail",
    "cancel",
    "retry",
    "get_task",
    "list_tasks",
    "counts",
    "rewrite_task_data",
    "register_agent",
    "heartbeat",
    "deregister_agent",
    "get_agent",
    "list_agents",
    "get_breaker",
    "set_workspace_limits",
    "get_workspace_limits",
    "get_spend",
    "reap",
    "list_workspaces",
)
"""The store operations :func:`instrument_store` times (a fixed, bounded label set)."""


class WorkspaceLabels:
    """Admits at most ``limit`` distinct workspace label values, first come first served;
    any other workspace is reported as ``_other``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, workspace_id: str) -> str:
        if workspace_id in self._seen:
            return workspace_id
        if len(self._seen) < self.limit:
            self._seen.add(workspace_id)
            return workspace_id
        return OTHER_WORKSPACE


class ControlPlaneMetrics:
    """Every metric of one control-plane process; see the module docstring."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_workspace_labels: int = DEFAULT_MAX_WORKSPACE_LABELS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.workspace_label = WorkspaceLabels(max_workspace_labels)
        self._collector: CoordinatorCollector | None = None
        task_labels = ("workspace", "priority")

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, task_labels, registry=self.registry)

        self.tasks_submitted = counter("aragora_tasks_submitted", "Tasks submitted.")
        self.tasks_completed = counter("aragora_tasks_completed", "Tasks that completed.")
        self.tasks_failed = counter(
            "aragora_tasks_failed", "Tasks that ended FAILED (no attempt left)."
        )
        self.tasks_cancelled = counter("aragora_tasks_cancelled", "Tasks cancelled.")
        self.tasks_retried = counter(
            "aragora_tasks_retried", "Failed attempts that sent their task back to pending."
        )
        self.task_latency = Histogram(
            "aragora_task_latency_seconds",
            "Time from submit to the end of a terminal task, on the store clock.",
            ("priority", "status"),
            buckets=TASK_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.task_run = Histogram(
            "aragora_task_run_seconds",
            "Time from the start of a task's last attempt to its end, on the store clock.",
            ("priority", "status"),
            buckets=TASK_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "aragora_http_requests",
            "HTTP requests answered, by route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "aragora_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ("method", "route"),
            buckets=HTTP_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.http_long_polls = Gauge(
            "aragora_http_long_polls_waiting",
            "Requests of this process waiting in a long-poll (claims with wait_s, result "
            "waits); a graceful shutdown answers them at once.",
            registry=self.registry,
        )
        self.store_duration = Histogram(
            "aragora_store_operation_duration_seconds",
            "Time of one store operation, by operation and outcome (ok or error).",
            ("operation", "outcome"),
            buckets=STORE_SECONDS_BUCKETS,
            registry=self.registry,
        )

    # -- tasks -----------------------------------------------------------------------------
    def _task_labels(self, task: Task) -> tuple[str, str]:
        return self.workspace_label(task.workspace_id), task.priority.value

    def record_submitted(self, task: Task) -> None:
        """Count a newly created task (not the existing task an idempotency key returns)."""
        self.tasks_submitted.labels(*self._task_labels(task)).inc()

    def record_finished(self, task: Task) -> None:
        """Count the task returned by complete, fail or cancel: terminal ones by outcome
        (with their latency and run time), a failed attempt that will be retried as
        retried. Other states are ignored."""
        workspace, priority = self._task_labels(task)
        if task.status is TaskStatus.PENDING:
            self.tasks_retried.labels(workspace, priority).inc()
            return
        counters = {
            TaskStatus.COMPLETED: self.tasks_completed,
            TaskStatus.FAILED: self.tasks_failed,
            TaskStatus.CANCELLED: self.tasks_cancelled,
        }
        counter = counters.get(task.status)
        if counter is None:
            return
        counter.labels(workspace, priority).inc()
        if task.finished_at is None:
            return
        status = task.status.value
        self.task_latency.labels(priority, status).observe(
            max(0.0, task.finished_at - task.created_at)
        )
        if task.started_at is not None:
            self.task_run.labels(priority, status).observe(
                max(0.0, task.finished_at - task.started_at)
            )

    def record_reaped(self, workspace_id: str, report: ReapReport) -> None:
        """Count what one reaping pass over a workspace requeued (retried) and failed;
        the reaper does not say their priorities, so they count as ``unknown``."""
        workspace = self.workspace_label(workspace_id)
        if report.tasks_requeued:
            self.tasks_retried.labels(workspace, UNKNOWN_PRIORITY).inc(report.tasks_requeued)
        if report.tasks_failed:
            self.tasks_failed.labels(workspace, UNKNOWN_PRIORITY).inc(report.tasks_failed)

    # -- HTTP ------------------------------------------------------------------------------
    def record_http_request(
        self, method: str, route: str | None, status: int, duration_s: float
    ) -> None:
        """Count one answered request; ``route`` is the matched route's template (``None``
        when no route matched), never the raw path."""
        method = method.upper() if method.upper() in _HTTP_METHODS else "OTHER"
        template = route or UNMATCHED_ROUTE
        self.http_requests.labels(method, template, str(status)).inc()
        self.http_duration.labels(method, template).observe(max(0.0, duration_s))

    # -- store -----------------------------------------------------------------------------
    def observe_store_operation(self, operation: str, duration_s: float, *, ok: bool) -> None:
        self.store_duration.labels(operation, "ok" if ok else "error").observe(max(0.0, duration_s))

    @contextlib.contextmanager
    def time_store_operation(self, operation: str) -> Iterator[None]:
        """Time the ``with`` block as one store operation (``outcome="error"`` if it
        raises). ``operation`` must come from a fixed set, e.g. :data:`STORE_OPERATIONS`."""
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.observe_store_operation(operation, time.perf_counter() - started, ok=ok)

    # -- gauges from the store -------------------------------------------------------------
    def watch_store(
        self, store: Store, *, instances: InstanceRegistry | None = None
    ) -> CoordinatorCollector:
        """Register the scrape-time gauges of ``store`` (queue depth, agents, breakers,
        instances); :meth:`scrape` refreshes them. One store per metrics object."""
        from aragora.observability.collector import CoordinatorCollector

        if self._collector is not None:
            raise ValueError("this metrics object already watches a store")
        self._collector = CoordinatorCollector(
            store, instances=instances, max_workspace_labels=self.workspace_label.limit
        )
        self.registry.register(self._collector)
        return self._collector

    async def scrape(self) -> tuple[bytes, str]:
        """Refresh the store gauges (if watched) and render everything: the body and
        content type of a ``/metrics`` answer."""
        if self._collector is not None:
            await self._collector.refresh()
        return render(self.registry)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def instrument_store(store: Store, metrics: ControlPlaneMetrics) -> None:
    """Time every operation in :data:`STORE_OPERATIONS` of this store object.

    The object's bound methods are wrapped in place: it keeps its class, so extension
    stores (tenancy, policy, audit, alerts) still recognise it. Idempotent for one
    metrics object; a second one is refused."""
    current = getattr(store, "_aragora_metrics", None)
    if current is metrics:
        return
    if current is not None:
        raise ValueError("this store is already timed by another metrics object")
    for name in STORE_OPERATIONS:
        method = getattr(store, name)
        setattr(store, name, _timed(method, name, metrics))
    store._aragora_metrics = metrics  # type: ignore[attr-defined]


def _timed(
    method: Callable[..., Awaitable[Any]], name: str, metrics: ControlPlaneMetrics
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        with metrics.time_store_operation(name):
            return await method(*args, **kwargs)

    return timed
