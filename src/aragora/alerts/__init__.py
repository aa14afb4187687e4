"""Alerts: rules evaluated by every instance, notified exactly once, to logs, hooks and
signed webhooks.

* :mod:`.models`: kinds, severities, :class:`AlertEvent` (what sinks receive) and the
  frozen :class:`AlertThresholds`.
* :mod:`.rules`: what each rule reads and finds.
* :mod:`.state`: the firing/resolved state of each alert in the store, changed by one
  compare-and-set per transition (:mod:`.redis_state`, :mod:`.sqlite_state`).
* :mod:`.engine`: :class:`AlertEngine`, on a schedule and on events.
* :mod:`.sinks` and :mod:`.webhook`: log, Python hooks, signed webhooks with retries.
"""

from aragora.alerts.engine import AlertEngine
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
from aragora.alerts.sinks import AlertHook, AlertSink, HookSink, LogSink
from aragora.alerts.webhook import WebhookSink, sign, verify_signature

__all__ = [
    "AlertEngine",
    "AlertEvent",
    "AlertHook",
    "AlertKind",
    "AlertRecord",
    "AlertSeverity",
    "AlertSink",
    "AlertStatus",
    "AlertThresholds",
    "Condition",
    "HookSink",
    "LogSink",
    "WebhookSink",
    "alert_key",
    "sign",
    "verify_signature",
]
