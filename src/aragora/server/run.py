"""Run the server under uvicorn, and choose its store from options and environment.

At startup the server loads its secret key (``ARAGORA_SECRET_KEY`` or
``<data-dir>/secret.key``) and its encryption keys (``ARAGORA_ENCRYPTION_KEYS``). When
workspace ``default`` has no admin token yet and ``ARAGORA_ADMIN_TOKEN`` is unset, one
is issued, printed once on standard output and written to ``<data-dir>/admin.token``
(mode 0600).

Logs: ``serve`` routes every logger (uvicorn's included, run with ``log_config=None``)
through :func:`aragora.observability.logging.configure_logging`: JSON lines unless
``ARAGORA_LOG_JSON=0``, at ``ARAGORA_LOG_LEVEL`` (else the ``log_level`` argument).
Alerts go to the log and, with ``ARAGORA_ALERT_WEBHOOK_URL`` and
``ARAGORA_ALERT_WEBHOOK_SECRET``, to a signed webhook; ``ARAGORA_ALERT_INTERVAL_S`` and
``ARAGORA_ALERT_QUEUE_MAX_AGE_S`` tune when they fire (:func:`alert_thresholds_from_env`).

Connections (:mod:`aragora.server.middleware.http_limits`): a request head must arrive
within ``ARAGORA_HTTP_HEADER_TIMEOUT_S`` (default 10) and its body within
``ARAGORA_HTTP_BODY_TIMEOUT_S`` (default 30), and a head may hold at most 32 KiB;
request bodies are limited by :mod:`aragora.server.middleware.body_limit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
from collections.abc import Callable, Mapping
from pathlib import Path
from socket import socket

import uvicorn

from aragora.alerts.models import AlertThresholds
from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import ConfigError
from aragora.crypto import PayloadCipher
from aragora.observability.logging import configure_logging
from aragora.server.app import create_app
from aragora.server.middleware.http_limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_HEAD_BYTES,
    LimitedH11Protocol,
    limited_h11_protocol,
)
from aragora.server.observability import ALERT_WEBHOOK_SECRET_ENV, ALERT_WEBHOOK_URL_ENV
from aragora.server.state import begin_shutdown, server_state
from aragora.tenancy.keyfiles import load_server_secret, write_token_file

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5.0
"""How long in-flight requests may run on after SIGINT/SIGTERM before they are cancelled."""
DEFAULT_DATA_DIR = ".aragora"
SQLITE_FILE_NAME = "state.db"
ADMIN_TOKEN_FILE_NAME = "admin.token"
OPEN_FILES_CAP = 65_536
"""Highest soft limit on open files the server asks for (see :func:`raise_open_file_limit`)."""


def data_dir_for_serve(data_dir: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The data directory: ``data_dir``, ``ARAGORA_DATA_DIR`` or ``./.aragora``, as an
    absolute path. Not created here: whatever writes into it first creates it."""
    directory = Path(data_dir or environ.get("ARAGORA_DATA_DIR") or DEFAULT_DATA_DIR)
    return directory.expanduser().resolve()


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
        directory = data_dir_for_serve(data_dir, environ)
        directory.mkdir(parents=True, exist_ok=True)
        # An absolute path after "sqlite:///" makes the four slashes of an absolute URL.
        overrides["store_url"] = f"sqlite:///{directory / SQLITE_FILE_NAME}"
    return ControlPlaneConfig.from_env(environ, **overrides)


def alert_thresholds_from_env(environ: Mapping[str, str] = os.environ) -> AlertThresholds:
    """Alert thresholds with ``ARAGORA_ALERT_INTERVAL_S`` (seconds between evaluations of
    each instance's alert engine) and ``ARAGORA_ALERT_QUEUE_MAX_AGE_S`` (how long a
    claimable task may wait before its queue counts as stalled) applied when set."""
    defaults = AlertThresholds()
    return dataclasses.replace(
        defaults,
        evaluate_interval_s=_env_seconds(
            environ, "ARAGORA_ALERT_INTERVAL_S", defaults.evaluate_interval_s
        ),
        queue_oldest_pending_max_age_s=_env_seconds(
            environ, "ARAGORA_ALERT_QUEUE_MAX_AGE_S", defaults.queue_oldest_pending_max_age_s
        ),
    )


def http_protocol_from_env(environ: Mapping[str, str] = os.environ) -> type[LimitedH11Protocol]:
    """uvicorn's HTTP protocol with the head size limit and the read deadlines applied:
    ``ARAGORA_HTTP_HEADER_TIMEOUT_S`` and ``ARAGORA_HTTP_BODY_TIMEOUT_S`` when set."""
    return limited_h11_protocol(
        header_timeout_s=_env_seconds(
            environ, "ARAGORA_HTTP_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S
        ),
        body_timeout_s=_env_seconds(environ, "ARAGORA_HTTP_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S),
        max_head_bytes=DEFAULT_MAX_HEAD_BYTES,
    )


def raise_open_file_limit(cap: int = OPEN_FILES_CAP) -> int:
    """Raise the soft limit on open files towards the hard limit (at most ``cap``) and
    return the limit in force.

    Each connection is a file descriptor, and a long-poll holds its connection while it
    waits: with the common soft limit of 1024, a few hundred waiting clients and the
    connections to the store would make ``accept`` fail for everyone else.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as exc:
            logger.warning("could not raise the open file limit from %d: %s", soft, exc)
            return soft
        return wanted
    return soft


def _env_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None


def configure_server_logging(
    log_level: str = "info", environ: Mapping[str, str] = os.environ
) -> logging.Handler:
    """JSON log lines on stderr unless ``ARAGORA_LOG_JSON=0``, at ``ARAGORA_LOG_LEVEL`` or
    ``log_level``; every log line written while serving a request carries its
    correlation id."""
    return configure_logging(
        json=environ.get("ARAGORA_LOG_JSON", "1") != "0",
        level=environ.get("ARAGORA_LOG_LEVEL") or log_level,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app that shutdown began before requests drain.

    uvicorn runs the app's lifespan shutdown only after in-flight requests finished;
    long-polls would hold it until the grace period ran out. ``on_shutdown`` releases
    them first. ``on_started`` runs once the app started and the sockets listen.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_shutdown: Callable[[], None],
        on_started: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown
        self._on_started = on_started

    async def startup(self, sockets: list[socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_started()

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
    data_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Serve the control plane until SIGINT or SIGTERM, then shut down gracefully.

    ``admin_token`` (``ARAGORA_ADMIN_TOKEN``) becomes the admin token of workspace
    ``default``. Without it, if that workspace has no admin token yet, one is issued,
    printed once on standard output and written to ``<data dir>/admin.token`` (mode
    0600). The data dir (``data_dir``, ``ARAGORA_DATA_DIR`` or ``./.aragora``) also
    keeps the server's secret key unless ``ARAGORA_SECRET_KEY`` is set.

    On the signal the server stops accepting connections, answers waiting long-polls
    with their current state, lets other requests finish (at most
    :data:`GRACEFUL_SHUTDOWN_S`), then closes the coordinator. Returns normally after
    SIGINT; after SIGTERM the process ends with that signal, as uvicorn re-raises it.
    A store that cannot be opened stops the server at startup; a missing or bad key is
    a ``ConfigError`` before anything starts.
    """
    configure_server_logging(log_level)
    raise_open_file_limit()
    directory = data_dir_for_serve(None if data_dir is None else os.fspath(data_dir))
    secret_key = load_server_secret(directory, os.environ)
    cipher = PayloadCipher.from_env()
    http_protocol = http_protocol_from_env()
    app = create_app(
        config,
        admin_token=admin_token or None,
        secret_key=secret_key,
        cipher=cipher,
        alert_webhook_url=os.environ.get(ALERT_WEBHOOK_URL_ENV) or None,
        alert_webhook_secret=os.environ.get(ALERT_WEBHOOK_SECRET_ENV) or None,
        alert_thresholds=alert_thresholds_from_env(),
    )

    def show_issued_admin_token() -> None:
        token = server_state(app).issued_admin_token
        if token is None:
            return
        path = directory / ADMIN_TOKEN_FILE_NAME
        try:
            write_token_file(path, token)
            where = f"also written to {path}"
        except OSError as exc:
            logger.warning("could not write the admin token to %s: %s", path, exc)
            where = "not written to a file: keep it now"
        print(f'Admin token for workspace "default" (shown once, {where}): {token}', flush=True)

    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            log_config=None,
            # aragora.server.access logs every request, with its correlation id.
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
            http=http_protocol,
            h11_max_incomplete_event_size=DEFAULT_MAX_HEAD_BYTES,
        ),
        on_shutdown=lambda: begin_shutdown(app),
        on_started=show_issued_admin_token,
    )
    # uvicorn re-raises the SIGINT it handled once the graceful shutdown is done.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
