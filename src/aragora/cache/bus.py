"""Telling every instance of a deployment to drop a cached entry.

A writer calls :meth:`InvalidationBus.publish` with a *namespace* (what kind of thing
changed: ``token``, ``workspace``, ``policy``, ...) and a *key* (which one) after its
write has committed. The entry is dropped in this process at once, before ``publish``
returns, so the writer reads its own write; other processes drop it when the message
reaches them.

* :class:`RedisInvalidationBus` publishes ``<namespace>:<key>`` on the channel
  ``<key_prefix>cache`` and holds one subscription to it per bus (one per server). A
  plain ``PUBLISH`` on a Redis Cluster reaches every node, so the subscription may sit
  on any node. Messages published while the subscription was down are lost, so losing
  the subscription and every (re)subscription drop *everything* cached; in between,
  the caches' short TTL bounds how stale an entry can be.
* :class:`LocalInvalidationBus` only reaches this process: the embedded SQLite store,
  where another process on the same file sees a change once the entry's TTL ran out.

Handlers run synchronously on the event loop and must not block: they drop entries.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from aragora.control_plane.backoff import LoopBackoff
from aragora.control_plane.errors import StoreUnavailableError

if TYPE_CHECKING:
    from aragora.store.base import Store
    from aragora.store.redis import RedisStore

logger = logging.getLogger(__name__)

InvalidationHandler = Callable[[str | None], None]
"""Called with the key to drop, or ``None`` to drop everything of the namespace."""

CHANNEL_SUFFIX: Final = "cache"
SUBSCRIBE_TIMEOUT_S: Final = 10.0
RESUBSCRIBE_MAX_S: Final = 2.0
_SEPARATOR: Final = ":"


class InvalidationBus(abc.ABC):
    """Delivers ``(namespace, key)`` invalidations to the handlers of every process.

    Use it as an async context manager (or :meth:`start` / :meth:`close`).
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[InvalidationHandler]] = {}

    def subscribe(self, namespace: str, handler: InvalidationHandler) -> None:
        """Call ``handler`` for every invalidation of ``namespace`` (and with ``None``
        whenever invalidations may have been missed)."""
        if not namespace or _SEPARATOR in namespace:
            raise ValueError(f"a namespace must be non-empty and hold no {_SEPARATOR!r}")
        self._handlers.setdefault(namespace, []).append(handler)

    async def publish(self, namespace: str, key: str) -> None:
        """Drop ``key`` of ``namespace`` here at once and in every other process soon.

        Call it after the write has committed. Never raises for an unreachable store:
        the write stands, and other processes drop the entry when its TTL runs out.
        """
        self.deliver(namespace, key)
        await self._send(namespace, key)

    def deliver(self, namespace: str, key: str | None) -> None:
        """Run the handlers of ``namespace`` for ``key`` in this process only."""
        for handler in self._handlers.get(namespace, ()):
            try:
                handler(key)
            except Exception:
                logger.exception("cache invalidation handler for %s failed", namespace)

    def deliver_all(self) -> None:
        """Tell every handler to drop everything (invalidations may have been missed)."""
        for namespace in list(self._handlers):
            self.deliver(namespace, None)

    @abc.abstractmethod
    async def _send(self, namespace: str, key: str) -> None:
        """Reach the other processes."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin receiving other processes' invalidations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving; idempotent."""

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


class LocalInvalidationBus(InvalidationBus):
    """Invalidations within this process only (the embedded SQLite store)."""

    async def _send(self, namespace: str, key: str) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisInvalidationBus(InvalidationBus):
    """Invalidations over Redis pub/sub; see the module docstring.

    ``resubscribe_max_s`` caps the wait between attempts to subscribe again after the
    subscription broke.
    """

    def __init__(self, store: RedisStore, *, resubscribe_max_s: float = RESUBSCRIBE_MAX_S) -> None:
        super().__init__()
        self._store = store
        self.channel = store.global_key(CHANNEL_SUFFIX)
        self._resubscribe_max_s = resubscribe_max_s
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.subscriptions = 0
        """How many times the subscription was (re)established; each one dropped every
        cached entry."""

    async def _send(self, namespace: str, key: str) -> None:
        message = f"{namespace}{_SEPARATOR}{key}"
        # A keyless command: a cluster client must be told where to send it (any node
        # will do, the cluster forwards every PUBLISH to all of them).
        route: dict[str, str] = {"target_nodes": "random"} if self._store.is_cluster else {}
        try:
            client = self._store.client
            await self._store.call(
                lambda: client.execute_command("PUBLISH", self.channel, message, **route)  # type: ignore[no-untyped-call]
            )
        except StoreUnavailableError as exc:
            logger.warning(
                "could not publish a %s cache invalidation (%s); other instances drop "
                "the entry when its TTL runs out",
                namespace,
                exc,
            )

    async def start(self) -> None:
        """Subscribe; :class:`StoreUnavailableError` if that fails for
        ``SUBSCRIBE_TIMEOUT_S`` seconds."""
        if self._listener is not None:
            return
        self._listener = asyncio.create_task(self._listen(), name="aragora-cache-invalidation")
        try:
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise StoreUnavailableError("could not subscribe to cache invalidations") from None

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def wait_subscribed(self, after: int, timeout_s: float) -> bool:
        """Wait until the subscription was established more than ``after`` times."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.subscriptions <= after:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._subscribed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), remaining)
        return True

    async def _listen(self) -> None:
        backoff = LoopBackoff(
            "cache invalidation subscription", 0.05, max_s=self._resubscribe_max_s, log=logger
        )
        attempt = 0
        while True:
            node_client = self._node_client(attempt)
            attempt += 1
            try:
                pubsub = (node_client or self._store.client).pubsub(ignore_subscribe_messages=True)
            except StoreUnavailableError as exc:
                await asyncio.sleep(backoff.failed(exc))
                continue
            try:
                await pubsub.subscribe(self.channel)
                # Whatever was published while we were not subscribed is lost.
                self.deliver_all()
                self.subscriptions += 1
                self._subscribed.set()
                backoff.succeeded()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    namespace, _, key = str(message["data"]).partition(_SEPARATOR)
                    self.deliver(namespace, key)
            except (RedisError, OSError) as exc:
                # The store is likely down too: stop answering from memory at once.
                self.deliver_all()
                delay_s = backoff.failed(exc)
            else:  # pragma: no cover - listen() only ends by raising
                delay_s = backoff.succeeded()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                if node_client is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await node_client.aclose()
            # Until the next subscription, entries live at most their TTL.
            await asyncio.sleep(delay_s)

    def _node_client(self, attempt: int) -> aioredis.Redis | None:
        """On a cluster, a plain client of one node to subscribe on (each failure moves
        to the next listed node); ``None`` on a single server, whose pool is used."""
        if not self._store.is_cluster:
            return None
        from aragora.store.redis import parse_cluster_url

        cluster = parse_cluster_url(self._store.config.effective_store_url)
        host, port = cluster.nodes[attempt % len(cluster.nodes)]
        return aioredis.Redis(
            host=host,
            port=port,
            username=cluster.username,
            password=cluster.password,
            ssl=cluster.ssl,
            decode_responses=True,
        )


def create_invalidation_bus(store: Store) -> InvalidationBus:
    """The bus for ``store``'s backend: Redis pub/sub, or this process only (SQLite)."""
    from aragora.store.redis import RedisStore

    if isinstance(store, RedisStore):
        return RedisInvalidationBus(store)
    return LocalInvalidationBus()
