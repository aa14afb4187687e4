"""What makes one server an observable instance of a distributed deployment.

:class:`ServerObservability` is built by :func:`aragora.server.services.build_services`
around the app's coordinator and holds, in start order:

1. ``metrics``: :class:`~aragora.observability.metrics.ControlPlaneMetrics`, timing the
   store's operations (``instrument_store``), with the scrape-time gauges of the store
   (``watch_store``), and fed by the scheduler's ``on_submitted`` / ``on_finished`` and
   the coordinator's ``on_reaped`` listeners;
2. ``instances``: this server's record in the instance registry, kept alive by an
   :class:`~aragora.control_plane.instances.InstancePresence` beating every
   ``heartbeat_interval`` and marking instances silent for ``heartbeat_timeout`` gone;
3. ``alerts``: an :class:`~aragora.alerts.AlertEngine` with ``instance_timeout_s =
   heartbeat_timeout``, logging every alert and, when configured, POSTing it signed to
   a webhook (:class:`~aragora.alerts.WebhookSink`); it also sees finished tasks
   (a task that ended FAILED is dead-lettered at once);
4. ``health``: the :class:`~aragora.server.health.HealthEvaluator` of the health route.

:meth:`ServerObservability.close` undoes them in reverse order. With
``run_background=False`` (what ``build_services`` does for test transports, which run
no lifespan) the instance registers once but does not beat, and alerts are evaluated
only when :meth:`~aragora.alerts.AlertEngine.evaluate` is called.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from aragora.alerts.engine import AlertEngine
from aragora.alerts.models import AlertThresholds
from aragora.alerts.sinks import AlertSink
from aragora.alerts.webhook import WebhookSink
from aragora.control_plane.coordinator import ControlPlaneCoordinator
from aragora.control_plane.errors import ConfigError, ControlPlaneError
from aragora.control_plane.instances import (
    InstancePresence,
    InstanceRegistry,
    create_instance_registry,
)
from aragora.control_plane.models import ReapReport, Task
from aragora.observability.metrics import ControlPlaneMetrics, instrument_store
from aragora.server.health import HealthEvaluator

logger = logging.getLogger(__name__)

ALERT_WEBHOOK_URL_ENV = "ARAGORA_ALERT_WEBHOOK_URL"
ALERT_WEBHOOK_SECRET_ENV = "ARAGORA_ALERT_WEBHOOK_SECRET"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Where alerts go and when they fire: a signed webhook (both ``webhook_url`` and
    ``webhook_secret``, from ``ARAGORA_ALERT_WEBHOOK_URL`` / ``_SECRET``, or neither)
    and thresholds (``instance_timeout_s`` is always the heartbeat timeout)."""

    webhook_url: str | None = None
    webhook_secret: str | None = None
    thresholds: AlertThresholds | None = None

    def __post_init__(self) -> None:
        if bool(self.webhook_url) != bool(self.webhook_secret):
            raise ConfigError(
                f"set both {ALERT_WEBHOOK_URL_ENV} and {ALERT_WEBHOOK_SECRET_ENV}, or neither"
            )


class ServerObservability:
    """Metrics, instance presence, alerts and health of one server; see the module
    docstring. Create with :meth:`start`; :meth:`close` is idempotent."""

    def __init__(
        self,
        coordinator: ControlPlaneCoordinator,
        metrics: ControlPlaneMetrics,
        instances: InstanceRegistry,
        presence: InstancePresence | None,
        alerts: AlertEngine,
        health: HealthEvaluator,
    ) -> None:
        self.coordinator = coordinator
        self.metrics = metrics
        self.instances = instances
        self.presence = presence
        self.alerts = alerts
        self.health = health
        self._closed = False

    @classmethod
    async def start(
        cls,
        coordinator: ControlPlaneCoordinator,
        settings: AlertSettings | None = None,
        *,
        run_background: bool = True,
    ) -> ServerObservability:
        """Build and start everything around ``coordinator``; what started is closed
        again if a later step fails."""
        settings = settings or AlertSettings()
        config = coordinator.config
        store = coordinator.store
        metrics = ControlPlaneMetrics()
        try:
            instrument_store(store, metrics)
        except ValueError:
            # Another app on this coordinator already times its store operations.
            logger.info("store operations are timed by another metrics object")
        instances = create_instance_registry(store)
        metrics.watch_store(store, instances=instances)
        thresholds = dataclasses.replace(
            settings.thresholds or AlertThresholds(),
            instance_timeout_s=config.heartbeat_timeout,
        )
        sinks: list[AlertSink] = []
        if settings.webhook_url and settings.webhook_secret:
            sinks.append(WebhookSink(settings.webhook_url, settings.webhook_secret))
        presence: InstancePresence | None = None
        alerts: AlertEngine | None = None
        try:
            if run_background:
                presence = InstancePresence(
                    instances,
                    interval_s=config.heartbeat_interval,
                    timeout_s=config.heartbeat_timeout,
                )
                await presence.start()
            else:
                await instances.register()
            alerts = AlertEngine(
                coordinator,
                thresholds=thresholds,
                sinks=sinks,
                instances=instances,
                run_schedule=run_background,
            )
            await alerts.start()
        except BaseException:
            if alerts is not None:
                coordinator.remove_alert_hook(alerts._on_coordinator_alert)
                await alerts.close()
            await _stop_presence(presence, instances)
            raise
        health = HealthEvaluator(store, config, instances=instances, thresholds=thresholds)
        observability = cls(coordinator, metrics, instances, presence, alerts, health)
        observability._attach()
        logger.info(
            "instance %s started (heartbeat every %gs, lost after %gs, webhook %s)",
            instances.instance_id,
            config.heartbeat_interval,
            config.heartbeat_timeout,
            "on" if sinks else "off",
        )
        return observability

    # -- listeners -------------------------------------------------------------------
    def _attach(self) -> None:
        scheduler = self.coordinator.scheduler
        scheduler.on_submitted.append(self._on_submitted)
        scheduler.on_finished.append(self._on_finished)
        self.coordinator.on_reaped.append(self._on_reaped)

    def _detach(self) -> None:
        scheduler = self.coordinator.scheduler
        for listeners, listener in (
            (scheduler.on_submitted, self._on_submitted),
            (scheduler.on_finished, self._on_finished),
        ):
            if listener in listeners:
                listeners.remove(listener)
        if self._on_reaped in self.coordinator.on_reaped:
            self.coordinator.on_reaped.remove(self._on_reaped)
        # The engine hooked itself onto the coordinator's alerts when it was built.
        self.coordinator.remove_alert_hook(self.alerts._on_coordinator_alert)

    def _on_submitted(self, task: Task) -> None:
        self.metrics.record_submitted(task)

    def _on_finished(self, task: Task) -> None:
        self.metrics.record_finished(task)
        self.alerts.observe_task(task)

    def _on_reaped(self, workspace_id: str, report: ReapReport) -> None:
        self.metrics.record_reaped(workspace_id, report)

    # -- shutdown --------------------------------------------------------------------
    async def close(self) -> None:
        """Detach the listeners, close the alert engine (draining its webhook), stop
        beating and deregister this instance. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._detach()
        try:
            await self.alerts.close()
        finally:
            await _stop_presence(self.presence, self.instances)


async def _stop_presence(presence: InstancePresence | None, instances: InstanceRegistry) -> None:
    if presence is not None:
        await presence.close()
        return
    try:
        await instances.deregister()
    except ControlPlaneError:
        logger.warning("could not deregister instance %s", instances.instance_id)
