"""Observability: structured logs, Prometheus metrics.

* :mod:`.logging`: ``configure_logging`` (JSON lines through structlog, the standard
  library routed through it), correlation ids in a context variable, secrets redacted.
* :mod:`.metrics`: ``ControlPlaneMetrics`` in a registry of its own, ``render`` for a
  ``/metrics`` endpoint, ``instrument_store``.
* :mod:`.collector`: gauges computed from the store at scrape time.

The metrics modules need ``prometheus-client``; they are imported on first use, so
logging works without it.
"""

from typing import TYPE_CHECKING, Any

from aragora.observability.logging import (
    bind_correlation_id,
    configure_logging,
    correlation_scope,
    current_correlation_id,
    get_logger,
    reset_correlation_id,
)

__all__ = [
    "ControlPlaneMetrics",
    "CoordinatorCollector",
    "bind_correlation_id",
    "configure_logging",
    "correlation_scope",
    "current_correlation_id",
    "get_logger",
    "instrument_store",
    "render",
    "reset_correlation_id",
]

if TYPE_CHECKING:
    from aragora.observability.collector import CoordinatorCollector
    from aragora.observability.metrics import ControlPlaneMetrics, instrument_store, render


def __getattr__(name: str) -> Any:
    if name in ("ControlPlaneMetrics", "instrument_store", "render"):
        from aragora.observability import metrics

        return getattr(metrics, name)
    if name == "CoordinatorCollector":
        from aragora.observability.collector import CoordinatorCollector

        return CoordinatorCollector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
