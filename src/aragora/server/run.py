"""Run the server under uvicorn, and choose its store from options and environment."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from socket import socket

import uvicorn

from aragora.control_plane.config import ControlPlaneConfig
from aragora.server.app import create_app
from aragora.server.state import begin_shutdown

GRACEFUL_SHUTDOWN_S = 5.0
"""How long in-flight requests may run on after SIGINT/SIGTERM before they are cancelled."""
DEFAULT_DATA_DIR = ".aragora"
SQLITE_FILE_NAME = "state.db"


def config_for_serve(
    store_url: str | None,
    data_dir: str | None,
    environ: Mapping[str, str] = os.environ,
) -> ControlPlaneConfig:
    """The configuration ``aragora serve`` runs with.

    Every ``ARAGORA_<FIELD>`` variable applies (:meth:`ControlPlaneConfig.from_env`).
    The store is, in this order: ``store_url`` (the ``--store`` option);
    ``ARAGORA_STORE_URL``; Redis at ``ARAGORA_REDIS_URL``; else the embedded SQLite
    store in ``<data dir>/state.db``, the data dir being ``data_dir``,
    ``ARAGORA_DATA_DIR`` or ``./.aragora`` (created if missing).
    """
    overrides: dict[str, object] = {}
    if store_url:
        overrides["store_url"] = store_url
    elif environ.get("ARAGORA_STORE_URL"):
        pass  # from_env reads it
    elif environ.get("ARAGORA_REDIS_URL"):
        overrides["store_url"] = None
    else:
        directory = Path(data_dir or environ.get("ARAGORA_DATA_DIR") or DEFAULT_DATA_DIR)
        directory = directory.expanduser().resolve()
        directory.mkdir(parents=True, exist_ok=True)
        # An absolute path after "sqlite:///" makes the four slashes of an absolute URL.
        overrides["store_url"] = f"sqlite:///{directory / SQLITE_FILE_NAME}"
    return ControlPlaneConfig.from_env(environ, **overrides)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app that shutdown began before requests drain.

    uvicorn runs the app's lifespan shutdown only after in-flight requests finished;
    long-polls would hold it until the grace period ran out. ``on_shutdown`` releases
    them first.
    """

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def serve(
    config: ControlPlaneConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    admin_token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve the control plane until SIGINT or SIGTERM, then shut down gracefully.

    On the signal the server stops accepting connections, answers waiting long-polls
    with their current state, lets other requests finish (at most
    :data:`GRACEFUL_SHUTDOWN_S`), then closes the coordinator. Returns normally after
    SIGINT; after SIGTERM the process ends with that signal, as uvicorn re-raises it.
    A store that cannot be opened stops the server at startup.
    """
    app = create_app(config, admin_token=admin_token or None)
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="on",
            timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        ),
        on_shutdown=lambda: begin_shutdown(app),
    )
    # uvicorn re-raises the SIGINT it handled once the graceful shutdown is done.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
