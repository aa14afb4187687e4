"""The web dashboard: static files served at ``/`` and the live feed they read.

The page (:data:`STATIC_DIR`: ``index.html``, ES modules, CSS; no build step) is served
without a token by :class:`~aragora.server.dashboard.static_files.DashboardMiddleware`;
everything it shows comes from the authenticated API, and live updates from
``GET /api/control-plane/events`` (:mod:`aragora.server.dashboard.feed`).
"""

from aragora.server.dashboard.static_files import STATIC_DIR, DashboardMiddleware

__all__ = ["STATIC_DIR", "DashboardMiddleware"]
