"""Signed webhook delivery of alert events, retried in the background.

Each event is POSTed as JSON (:meth:`AlertEvent.to_dict`) with these headers:

``X-Aragora-Timestamp``
    the Unix time (seconds) at which this attempt was signed
``X-Aragora-Signature``
    ``sha256=<hex>``: HMAC-SHA256 under the shared secret of ``<timestamp>.<body>``,
    so a receiver can check both origin and freshness (replays of an old delivery fail
    the timestamp check). Use :func:`verify_signature`.
``X-Aragora-Delivery``
    an id that stays the same across the retries of one delivery, for de-duplication

:class:`WebhookSink` keeps a bounded queue; ``send`` only enqueues (an event that does
not fit is dropped and counted, never waited for). One background worker delivers in
order, retrying connection errors, timeouts, 408, 429 and 5xx answers with exponential
backoff and jitter (honouring a numeric ``Retry-After``) up to ``max_attempts``; other
4xx answers are final. ``close`` stops accepting events and drains the queue for up to
``drain_timeout_s`` before it gives up on the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import httpx

from aragora.alerts.models import AlertEvent
from aragora.control_plane.backoff import backoff_delay_s
from aragora.control_plane.errors import ConfigError

logger = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Aragora-Signature"
TIMESTAMP_HEADER: Final = "X-Aragora-Timestamp"
DELIVERY_HEADER: Final = "X-Aragora-Delivery"
SIGNATURE_PREFIX: Final = "sha256="
DEFAULT_TOLERANCE_S: Final = 300.0
_RETRY_STATUSES: Final = frozenset({408, 425, 429})


def _secret_bytes(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: bytes | str, timestamp: int, body: bytes) -> str:
    """The ``X-Aragora-Signature`` value of ``body`` signed at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: bytes | str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now_s: float | None = None,
) -> bool:
    """True if ``signature`` signs ``body`` at ``timestamp`` under ``secret`` and the
    timestamp is within ``tolerance_s`` of ``now_s`` (default: the local clock)."""
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit():
        return False
    sent_at = int(timestamp)
    current = time.time() if now_s is None else now_s
    if abs(current - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body), signature)


@dataclass(slots=True)
class WebhookStats:
    """What the sink did so far."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Delivery:
    delivery_id: str
    body: bytes


class WebhookSink:
    """POSTs every alert event, signed, to ``url``; see the module docstring.

    Use as ``async with WebhookSink(...)`` or hand it to an ``AlertEngine``, which
    starts and closes it. ``client`` lets the caller supply (and own) the HTTP client.
    """

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        *,
        max_queued_events: int = 1000,
        max_attempts: int = 8,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        request_timeout_s: float = 10.0,
        drain_timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("webhook url must start with http:// or https://")
        if not _secret_bytes(secret):
            raise ConfigError("webhook secret must not be empty")
        if max_queued_events < 1 or max_attempts < 1:
            raise ConfigError("max_queued_events and max_attempts must be at least 1")
        if min(backoff_base_s, backoff_max_s, request_timeout_s) <= 0 or drain_timeout_s < 0:
            raise ConfigError("webhook times must be greater than 0")
        self.url = url
        self._secret = _secret_bytes(secret)
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._drain_timeout_s = drain_timeout_s
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=max_queued_events)
        self._client = client
        self._owns_client = client is None
        self._request_timeout_s = request_timeout_s
        self._worker: asyncio.Task[None] | None = None
        self._accepting = True
        self._closed = False
        self.stats = WebhookStats()

    # -- the caller's side -----------------------------------------------------------------
    def send(self, event: AlertEvent) -> None:
        """Queue the event for delivery; never waits. Dropped (and counted) when the
        queue is full or the sink is closing."""
        body = json.dumps(event.to_dict(), separators=(",", ":"), sort_keys=True).encode()
        if not self._accepting:
            self.stats.dropped += 1
            logger.warning("webhook sink is closed; alert %s not delivered", event.kind)
            return
        try:
            self._queue.put_nowait(_Delivery(uuid.uuid4().hex, body))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            logger.error("webhook queue full; alert %s dropped", event.kind)

    async def join(self) -> None:
        """Wait until every queued event was delivered or given up."""
        await self._queue.join()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._worker is not None or self._closed:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._request_timeout_s)
        self._worker = asyncio.create_task(self._work(), name="aragora-alert-webhook")

    async def close(self) -> None:
        """Stop accepting events, deliver what is queued for up to ``drain_timeout_s``,
        then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        worker, self._worker = self._worker, None
        if worker is not None:
            try:
                await asyncio.wait_for(self._queue.join(), self._drain_timeout_s)
            except TimeoutError:
                logger.error("webhook drain timed out; undelivered alerts are dropped")
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        left = self._queue.qsize()
        if left:
            self.stats.dropped += left
            logger.error("webhook sink closed with %d alert(s) undelivered", left)
        if self._owns_client and self._client is not None:
            await self._client.aclose()

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

    # -- delivery ------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                self.stats.dropped += 1
                raise
            except Exception:
                self.stats.failed += 1
                logger.exception("webhook delivery %s failed", delivery.delivery_id)
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: _Delivery) -> None:
        assert self._client is not None
        for attempt in range(1, self._max_attempts + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "aragora-alerts",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self._secret, timestamp, delivery.body),
                DELIVERY_HEADER: delivery.delivery_id,
            }
            retry_after_s: float | None = None
            try:
                response = await self._client.post(self.url, content=delivery.body, headers=headers)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    self.stats.delivered += 1
                    return
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in _RETRY_STATUSES:
                    self.stats.failed += 1
                    logger.error(
                        "webhook refused delivery %s (%s); not retried",
                        delivery.delivery_id,
                        reason,
                    )
                    return
                retry_after_s = _retry_after_s(response)
            if attempt == self._max_attempts:
                break
            self.stats.retried += 1
            delay_s = self._backoff_s(attempt, retry_after_s)
            logger.warning(
                "webhook delivery %s attempt %d failed (%s); retrying in %.2fs",
                delivery.delivery_id,
                attempt,
                reason,
                delay_s,
            )
            await asyncio.sleep(delay_s)
        self.stats.failed += 1
        logger.error(
            "webhook delivery %s failed after %d attempts",
            delivery.delivery_id,
            self._max_attempts,
        )

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        delay = backoff_delay_s(attempt, self._backoff_base_s, self._backoff_max_s)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._backoff_max_s))
        return delay


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
