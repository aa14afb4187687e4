"""Server instances of one deployment: who is alive, who vanished, and work that runs once.

Every ``aragora serve`` process registers itself (a random instance id, host, pid,
version, start time) and beats at least every heartbeat interval, storing the time of
its last beat and a few counters of its own. Any instance may call :meth:`mark_gone`:
it moves instances silent for longer than the timeout from *live* to *gone* in one
atomic store step, so however many instances run it at once, each silent instance is
marked exactly once (by exactly one caller, which gets it back). An instance marked
gone that beats again is live again; a cleanly stopping one deregisters and is never
reported gone. Gone records are forgotten ``gone_retention_s`` after they were marked.

Leases (:meth:`InstanceRegistry.acquire_lease`, :meth:`InstanceRegistry.run_exclusive`)
let many instances agree on the one that does a piece of work. Acquire-or-renew is one
atomic step: a free or expired lease goes to the caller with a new *fencing token*
(a counter per lease name that only grows); a held lease is renewed only for its holder
presenting its current token; anyone else is refused. Work done under a lease should
carry the fencing token so that whatever it writes can reject a holder whose lease ran
out meanwhile (its token is smaller than the current one).

Times are epoch seconds on the store clock (the one task leases use).

Redis keys (all share the hash tag ``{instances}``, so every script touches one slot;
times in ms):

``<prefix>{instances}:i:<id>``
    hash: id, host, pid, version, started, beat, gone ("" while live), counters (JSON)
``<prefix>{instances}:live``
    zset: instance id -> last beat, instances not gone
``<prefix>{instances}:gone``
    zset: instance id -> time it was marked gone
``<prefix>{instances}:lease:<name>``
    hash: holder ("" when released), token (fencing counter), expires. Never deleted, so
    the fencing token never goes back.

SQLite tables (created on first use): ``instances`` and ``instance_leases``, with the
same fields, each operation one ``BEGIN IMMEDIATE`` transaction of the store.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Self, TypeVar

from redis.commands.core import AsyncScript

import aragora
from aragora.control_plane.backoff import DEFAULT_MAX_S as DEFAULT_BACKOFF_MAX_S
from aragora.control_plane.backoff import LoopBackoff
from aragora.control_plane.errors import ConfigError, StoreUnavailableError, ValidationError
from aragora.control_plane.models import validate_name

if TYPE_CHECKING:
    from aragora.store.base import Store
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_COUNTERS: Final = 32
DEFAULT_GONE_RETENTION_S: Final = 86_400.0
_BATCH: Final = 500
_COUNTER_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HOST_MAX_CHARS: Final = 255
_VERSION_MAX_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """One server instance as the store knows it; ``gone_at`` is set once it was marked
    gone for staying silent."""

    instance_id: str
    host: str
    pid: int
    version: str
    started_at: float
    last_beat_at: float
    gone_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def is_gone(self) -> bool:
        return self.gone_at is not None


@dataclass(frozen=True, slots=True)
class Lease:
    """The outcome of one acquire-or-renew: ``held`` tells whether the caller holds the
    lease now, ``fencing_token`` is its token then (``None`` when not held).
    ``holder_id`` and ``expires_at`` describe the current holder, whoever it is."""

    name: str
    held: bool
    fencing_token: int | None
    holder_id: str | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class ExclusiveRun(Generic[_T]):
    """What :meth:`InstanceRegistry.run_exclusive` did: whether this instance held the
    lease (and so ran the work), under which fencing token, and the work's result."""

    held: bool
    fencing_token: int | None
    result: _T | None = None


# -- validation ----------------------------------------------------------------------------
def _positive_seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, "must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(name, "must be a finite number of seconds greater than 0")
    return float(value)


def validate_counters(counts: Mapping[str, int] | None) -> dict[str, int]:
    """At most :data:`MAX_COUNTERS` counters named like ``tasks_claimed`` with int values."""
    if counts is None:
        return {}
    if not isinstance(counts, Mapping):
        raise ValidationError("counts", "must be a mapping of counter names to integers")
    if len(counts) > MAX_COUNTERS:
        raise ValidationError("counts", f"at most {MAX_COUNTERS} counters")
    checked: dict[str, int] = {}
    for name, value in counts.items():
        if not isinstance(name, str) or not _COUNTER_NAME_RE.fullmatch(name):
            raise ValidationError("counts", f"counter name {name!r} must match [a-z][a-z0-9_]*")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("counts", f"counter {name!r} must be an integer")
        checked[name] = value
    return checked


# -- the interface -------------------------------------------------------------------------
class InstanceRegistry(abc.ABC):
    """This process's record among the instances of a deployment, and the leases it holds.

    Public methods validate their arguments, then run one atomic store step. One object
    stands for one instance (``instance_id``); create it with
    :func:`create_instance_registry`.
    """

    def __init__(
        self,
        *,
        instance_id: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        version: str | None = None,
        gone_retention_s: float = DEFAULT_GONE_RETENTION_S,
    ) -> None:
        self.instance_id = validate_name(instance_id or uuid.uuid4().hex, "instance_id")
        self.host = (host or socket.gethostname())[:_HOST_MAX_CHARS]
        self.pid = os.getpid() if pid is None else pid
        self.version = (version or aragora.__version__)[:_VERSION_MAX_CHARS]
        self.gone_retention_s = _positive_seconds(gone_retention_s, "gone_retention_s")
        self._started_at: float | None = None
        self._lease_tokens: dict[str, int] = {}

    # -- clock ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def now(self) -> float:
        """The store clock in epoch seconds (test offset included)."""

    # -- this instance -------------------------------------------------------------------
    async def register(self) -> InstanceInfo:
        """Record this instance as live with a beat now; registering again keeps the start
        time of this object's first registration."""
        if self._started_at is None:
            self._started_at = await self.now()
        return await self._upsert({})

    async def beat(self, counts: Mapping[str, int] | None = None) -> InstanceInfo:
        """Store the time of this beat and ``counts`` (small counters of this instance,
        replacing the previous ones). An instance marked gone meanwhile is live again; a
        forgotten one is recorded afresh."""
        checked = validate_counters(counts)
        if self._started_at is None:
            self._started_at = await self.now()
        return await self._upsert(checked)

    async def _upsert(self, counts: dict[str, int]) -> InstanceInfo:
        assert self._started_at is not None
        info = InstanceInfo(
            instance_id=self.instance_id,
            host=self.host,
            pid=self.pid,
            version=self.version,
            started_at=self._started_at,
            last_beat_at=0.0,
            counters=counts,
        )
        beat_at, was_gone = await self._put(info)
        if was_gone:
            logger.warning("instance %s had been marked gone and beats again", self.instance_id)
        return dataclasses.replace(info, last_beat_at=beat_at)

    async def deregister(self) -> None:
        """Forget this instance (a clean stop: it is never reported gone)."""
        await self._delete(self.instance_id)

    # -- every instance ------------------------------------------------------------------
    async def list_live(self, timeout_s: float) -> list[InstanceInfo]:
        """Instances not marked gone whose last beat is at most ``timeout_s`` old, by id."""
        records = await self._live(_positive_seconds(timeout_s, "timeout_s"))
        return sorted(records, key=lambda i: i.instance_id)

    async def mark_gone(self, timeout_s: float) -> list[InstanceInfo]:
        """Mark gone every instance silent for more than ``timeout_s``; return those this
        call marked (each silent instance is returned by exactly one caller). Also
        forgets records gone for longer than ``gone_retention_s``. Idempotent."""
        marked = await self._mark_gone(_positive_seconds(timeout_s, "timeout_s"))
        return sorted(marked, key=lambda i: i.instance_id)

    async def gone_since(self, since: float) -> list[InstanceInfo]:
        """Instances marked gone at or after ``since`` (epoch seconds on the store clock)
        and not back or forgotten since, oldest first."""
        if isinstance(since, bool) or not isinstance(since, int | float):
            raise ValidationError("since", "must be epoch seconds")
        records = await self._gone_since(float(since))
        return sorted(records, key=lambda i: (i.gone_at or 0.0, i.instance_id))

    # -- leases ----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, ttl_s: float) -> Lease:
        """Acquire the lease ``name`` for ``ttl_s``, or renew it if this instance holds it,
        in one atomic step that compares the stored fencing token with ours."""
        validate_name(name, "name")
        ttl = _positive_seconds(ttl_s, "ttl_s")
        lease = await self._acquire(name, self._lease_tokens.get(name), ttl)
        if lease.held and lease.fencing_token is not None:
            self._lease_tokens[name] = lease.fencing_token
        else:
            self._lease_tokens.pop(name, None)
        return lease

    async def run_exclusive(
        self, name: str, work: Callable[[int], Awaitable[_T]], *, ttl_s: float
    ) -> ExclusiveRun[_T]:
        """Run ``work(fencing_token)`` only if this instance holds (acquires or renews) the
        lease ``name``; across all instances at most one runs it per lease term.

        The lease is kept after the work (call again to renew it; the holder keeps
        winning while it renews within ``ttl_s``). Work longer than ``ttl_s`` must renew
        with :meth:`acquire_lease` meanwhile, or stamp its writes with the token."""
        lease = await self.acquire_lease(name, ttl_s)
        if not lease.held or lease.fencing_token is None:
            return ExclusiveRun(False, None)
        return ExclusiveRun(True, lease.fencing_token, await work(lease.fencing_token))

    async def release_lease(self, name: str) -> bool:
        """Give the lease up now if this instance holds it; True if it did. The fencing
        token is kept, so the next holder gets a larger one."""
        validate_name(name, "name")
        token = self._lease_tokens.pop(name, None)
        if token is None:
            return False
        return await self._release(name, token)

    # -- primitives of a backend (arguments already validated) ---------------------------
    @abc.abstractmethod
    async def _put(self, info: InstanceInfo) -> tuple[float, bool]:
        """Upsert the instance as live with a beat now: (beat time, was it gone)."""

    @abc.abstractmethod
    async def _delete(self, instance_id: str) -> None: ...

    @abc.abstractmethod
    async def _live(self, timeout_s: float) -> Sequence[InstanceInfo]: ...

    @abc.abstractmethod
    async def _mark_gone(self, timeout_s: float) -> Sequence[InstanceInfo]: ...

    @abc.abstractmethod
    async def _gone_since(self, since: float) -> Sequence[InstanceInfo]: ...

    @abc.abstractmethod
    async def _acquire(self, name: str, token: int | None, ttl_s: float) -> Lease: ...

    @abc.abstractmethod
    async def _release(self, name: str, token: int) -> bool: ...


def create_instance_registry(store: Store, **kwargs: Any) -> InstanceRegistry:
    """The instance registry kept in the same place as ``store`` (Redis or SQLite);
    ``kwargs`` are those of :class:`InstanceRegistry`."""
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

    if isinstance(store, RedisStore):
        return RedisInstanceRegistry(store, **kwargs)
    if isinstance(store, SqliteStore):
        return SqliteInstanceRegistry(store, **kwargs)
    raise ConfigError(f"no instance registry for {type(store).__name__}")


# -- keeping this instance registered --------------------------------------------------------
class InstancePresence:
    """Keeps one instance registered while it runs: registers on start, beats every
    ``interval_s`` (with ``counters()``) and marks instances silent for ``timeout_s``
    gone, and deregisters on close (shielded from cancellation, so a clean stop is never
    reported as a lost instance). While beats fail, the wait between them grows up to
    ``backoff_max_s``, and never beyond half of ``timeout_s`` (see
    :class:`~aragora.control_plane.backoff.LoopBackoff`)."""

    def __init__(
        self,
        registry: InstanceRegistry,
        *,
        interval_s: float,
        timeout_s: float,
        counters: Callable[[], Mapping[str, int]] | None = None,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
    ) -> None:
        self.registry = registry
        self.interval_s = _positive_seconds(interval_s, "interval_s")
        self.backoff_max_s = _positive_seconds(backoff_max_s, "backoff_max_s")
        self.timeout_s = _positive_seconds(timeout_s, "timeout_s")
        if self.interval_s >= self.timeout_s:
            raise ConfigError("interval_s must be shorter than timeout_s")
        self._counters = counters
        # Never wait so long that the others mark this instance gone once the store
        # is back: at most half the timeout between attempts.
        self.backoff = LoopBackoff(
            "instance beat",
            self.interval_s,
            max_s=min(self.backoff_max_s, self.timeout_s / 2),
            log=logger,
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.registry.register()
        self._task = asyncio.create_task(self._run(), name="aragora-instance-presence")

    async def beat_once(self) -> list[InstanceInfo]:
        """One beat and one pass of :meth:`InstanceRegistry.mark_gone`; the instances
        this pass marked gone."""
        await self.registry.beat(self._counters() if self._counters else None)
        return await self.registry.mark_gone(self.timeout_s)

    async def _run(self) -> None:
        delay_s = self.interval_s
        while True:
            await self.backoff.sleep(delay_s)
            try:
                await self.beat_once()
            except StoreUnavailableError as exc:
                delay_s = self.backoff.failed(exc)
            else:
                delay_s = self.backoff.succeeded()

    async def close(self) -> None:
        """Stop beating and deregister. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await asyncio.shield(self.registry.deregister())
        except StoreUnavailableError:
            logger.warning("could not deregister instance %s", self.registry.instance_id)

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


# -- Redis -----------------------------------------------------------------------------------
_LUA_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
"""

_PUT_LUA: Final = (
    """
-- put: upsert an instance as live with a beat now.
-- KEYS[1] the instance's hash; KEYS[2] the live zset; KEYS[3] the gone zset
-- ARGV[1] clock offset in ms, added to TIME (0 outside tests)
-- ARGV[2] id  ARGV[3] host  ARGV[4] pid  ARGV[5] version  ARGV[6] started (ms)
-- ARGV[7] counters (JSON object)
-- Returns {beat time in ms, 1 if the instance had been marked gone else 0}.
"""
    + _LUA_NOW
    + """
local was_gone = redis.call('ZSCORE', KEYS[3], ARGV[2]) and 1 or 0
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'host', ARGV[3], 'pid', ARGV[4],
  'version', ARGV[5], 'started', ARGV[6], 'beat', now, 'gone', '', 'counters', ARGV[7])
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return {now, was_gone}
"""
)

_MARK_GONE_LUA: Final = (
    """
-- mark_gone: move instances silent for longer than the timeout from live to gone, and
-- forget records gone for longer than the retention.
-- KEYS[1] the live zset; KEYS[2] the gone zset; KEYS[3] the common prefix of instance
--         hashes (KEYS[3] .. id, same hash slot)
-- ARGV[1] clock offset in ms  ARGV[2] timeout (ms)  ARGV[3] batch size
-- ARGV[4] retention of gone records (ms)
-- Returns {flat hashes of the instances marked by this call, 1 if more may be silent}.
"""
    + _LUA_NOW
    + """
local batch = tonumber(ARGV[3])
local silent = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])),
  'LIMIT', 0, batch)
local marked = {}
for _, id in ipairs(silent) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('HSET', KEYS[3] .. id, 'gone', now)
  marked[#marked + 1] = redis.call('HGETALL', KEYS[3] .. id)
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[4])),
  'LIMIT', 0, batch)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('DEL', KEYS[3] .. id)
end
return {marked, (#silent == batch or #old == batch) and 1 or 0}
"""
)

_ACQUIRE_LUA: Final = (
    """
-- acquire: acquire or renew a lease in one step.
-- KEYS[1] the lease's hash (holder, token, expires)
-- ARGV[1] clock offset in ms  ARGV[2] caller's instance id
-- ARGV[3] the caller's current fencing token ("" if it holds none)  ARGV[4] ttl (ms)
-- A lease held (unexpired) by the caller presenting its current token is renewed; one
-- held by anyone else is refused; a free or expired one goes to the caller with the
-- fencing token increased by one.
-- Returns {1 if the caller holds it now else 0, token, expires (ms), holder}.
"""
    + _LUA_NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'expires')
local holder = h[1] or ''
local token = tonumber(h[2] or '0')
local expires = tonumber(h[3] or '0')
if holder ~= '' and expires > now then
  if holder == ARGV[2] and tonumber(ARGV[3]) == token then
    expires = now + tonumber(ARGV[4])
    redis.call('HSET', KEYS[1], 'expires', expires)
    return {1, token, expires, holder}
  end
  return {0, token, expires, holder}
end
token = token + 1
expires = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'holder', ARGV[2], 'token', token, 'expires', expires)
return {1, token, expires, ARGV[2]}
"""
)

_RELEASE_LUA: Final = """
-- release: free a lease if the caller holds it with this token (the token is kept).
-- KEYS[1] the lease's hash
-- ARGV[1] caller's instance id  ARGV[2] caller's fencing token
-- Returns 1 if released, else 0.
local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
if h[1] == ARGV[1] and tonumber(h[2]) == tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'holder', '', 'expires', 0)
  return 1
end
return 0
"""

_DELETE_LUA: Final = """
-- delete: forget one instance (one step, also on a cluster, which has no MULTI).
-- KEYS[1] the instance's hash  KEYS[2] live zset  KEYS[3] gone zset
-- ARGV[1] instance id
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


def _instance_from_hash(h: Mapping[str, str]) -> InstanceInfo:
    gone = h.get("gone", "")
    return InstanceInfo(
        instance_id=h["id"],
        host=h.get("host", ""),
        pid=int(h.get("pid", "0")),
        version=h.get("version", ""),
        started_at=int(h.get("started", "0")) / 1000,
        last_beat_at=int(h.get("beat", "0")) / 1000,
        gone_at=int(gone) / 1000 if gone else None,
        counters=json.loads(h.get("counters") or "{}"),
    )


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisInstanceRegistry(InstanceRegistry):
    """Instances and leases in the same Redis, under the same ``key_prefix``, as ``store``."""

    def __init__(self, store: RedisStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store
        self._scripts: dict[str, AsyncScript] = {}

    def _key(self, suffix: str) -> str:
        return self._store.global_key("{instances}:" + suffix)

    async def _script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._store.client.register_script(source)
            self._scripts[source] = script
        return await self._store.call(lambda: script(keys=keys, args=args))

    async def _records(self, ids: Sequence[str]) -> list[InstanceInfo]:
        if not ids:
            return []

        async def fetch() -> list[dict[str, str]]:
            pipe = self._store.client.pipeline(transaction=False)
            for instance_id in ids:
                pipe.hgetall(self._key("i:" + instance_id))
            rows: list[dict[str, str]] = await pipe.execute()
            return rows

        return [_instance_from_hash(h) for h in await self._store.call(fetch) if h]

    async def now(self) -> float:
        return await self._store.now()

    async def _put(self, info: InstanceInfo) -> tuple[float, bool]:
        beat_ms, was_gone = await self._script(
            _PUT_LUA,
            [self._key("i:" + info.instance_id), self._key("live"), self._key("gone")],
            [
                self._store.clock_offset_ms(),
                info.instance_id,
                info.host,
                info.pid,
                info.version,
                round(info.started_at * 1000),
                json.dumps(info.counters, separators=(",", ":"), sort_keys=True),
            ],
        )
        return int(beat_ms) / 1000, bool(was_gone)

    async def _delete(self, instance_id: str) -> None:
        await self._script(
            _DELETE_LUA,
            [self._key("i:" + instance_id), self._key("live"), self._key("gone")],
            [instance_id],
        )

    async def _live(self, timeout_s: float) -> Sequence[InstanceInfo]:
        cutoff_ms = round((await self.now() - timeout_s) * 1000)
        live_key = self._key("live")
        ids: list[str] = await self._store.call(
            lambda: self._store.client.zrangebyscore(live_key, cutoff_ms, "+inf")
        )
        return [i for i in await self._records(ids) if not i.is_gone]

    async def _mark_gone(self, timeout_s: float) -> Sequence[InstanceInfo]:
        marked: list[InstanceInfo] = []
        while True:
            rows, more = await self._script(
                _MARK_GONE_LUA,
                [self._key("live"), self._key("gone"), self._key("i:")],
                [
                    self._store.clock_offset_ms(),
                    round(timeout_s * 1000),
                    _BATCH,
                    round(self.gone_retention_s * 1000),
                ],
            )
            marked += [_instance_from_hash(_pairs(flat)) for flat in rows]
            if not int(more):
                return marked

    async def _gone_since(self, since: float) -> Sequence[InstanceInfo]:
        gone_key = self._key("gone")
        ids: list[str] = await self._store.call(
            lambda: self._store.client.zrangebyscore(gone_key, round(since * 1000), "+inf")
        )
        return [i for i in await self._records(ids) if i.is_gone]

    async def _acquire(self, name: str, token: int | None, ttl_s: float) -> Lease:
        held, current, expires_ms, holder = await self._script(
            _ACQUIRE_LUA,
            [self._key("lease:" + name)],
            [
                self._store.clock_offset_ms(),
                self.instance_id,
                "" if token is None else token,
                max(1, round(ttl_s * 1000)),
            ],
        )
        if int(held):
            return Lease(name, True, int(current), holder, int(expires_ms) / 1000)
        return Lease(name, False, None, holder or None, int(expires_ms) / 1000)

    async def _release(self, name: str, token: int) -> bool:
        released = await self._script(
            _RELEASE_LUA, [self._key("lease:" + name)], [self.instance_id, token]
        )
        return bool(released)


# -- SQLite ----------------------------------------------------------------------------------
SQLITE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_beat_at REAL NOT NULL,
    gone_at REAL,
    counters TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_live ON instances (last_beat_at) WHERE gone_at IS NULL;
CREATE INDEX IF NOT EXISTS instances_gone ON instances (gone_at) WHERE gone_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS instance_leases (
    name TEXT PRIMARY KEY,
    holder_id TEXT,
    token INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

_INSTANCE_COLUMNS: Final = (
    "instance_id, host, pid, version, started_at, last_beat_at, gone_at, counters"
)


def _instance_from_row(row: sqlite3.Row) -> InstanceInfo:
    return InstanceInfo(
        instance_id=row["instance_id"],
        host=row["host"],
        pid=row["pid"],
        version=row["version"],
        started_at=row["started_at"],
        last_beat_at=row["last_beat_at"],
        gone_at=row["gone_at"],
        counters=json.loads(row["counters"]),
    )


class SqliteInstanceRegistry(InstanceRegistry):
    """Instances and leases in the same SQLite file, and transactions, as ``store``."""

    def __init__(self, store: SqliteStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store
        self._schema_ready = False

    async def _db(self) -> SqliteStore:
        if not self._schema_ready:
            await self._store.ensure_schema(SQLITE_SCHEMA)
            self._schema_ready = True
        return self._store

    async def now(self) -> float:
        return await self._store.now()

    async def _put(self, info: InstanceInfo) -> tuple[float, bool]:
        def body(conn: sqlite3.Connection, now: float) -> tuple[float, bool]:
            row = conn.execute(
                "SELECT gone_at FROM instances WHERE instance_id = ?", (info.instance_id,)
            ).fetchone()
            conn.execute(
                f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    info.instance_id,
                    info.host,
                    info.pid,
                    info.version,
                    info.started_at,
                    now,
                    json.dumps(info.counters, sort_keys=True),
                ),
            )
            return now, row is not None and row["gone_at"] is not None

        return await (await self._db()).transaction(body)

    async def _delete(self, instance_id: str) -> None:
        def body(conn: sqlite3.Connection, _now: float) -> None:
            conn.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))

        await (await self._db()).transaction(body)

    async def _live(self, timeout_s: float) -> Sequence[InstanceInfo]:
        def body(conn: sqlite3.Connection, now: float) -> list[InstanceInfo]:
            rows = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances"
                " WHERE gone_at IS NULL AND last_beat_at >= ?",
                (now - timeout_s,),
            ).fetchall()
            return [_instance_from_row(r) for r in rows]

        return await (await self._db()).snapshot(body)

    async def _mark_gone(self, timeout_s: float) -> Sequence[InstanceInfo]:
        def body(conn: sqlite3.Connection, now: float) -> list[InstanceInfo]:
            silent = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances"
                " WHERE gone_at IS NULL AND last_beat_at < ?",
                (now - timeout_s,),
            ).fetchall()
            conn.executemany(
                "UPDATE instances SET gone_at = ? WHERE instance_id = ?",
                [(now, r["instance_id"]) for r in silent],
            )
            conn.execute(
                "DELETE FROM instances WHERE gone_at IS NOT NULL AND gone_at < ?",
                (now - self.gone_retention_s,),
            )
            return [dataclasses.replace(_instance_from_row(r), gone_at=now) for r in silent]

        return await (await self._db()).transaction(body)

    async def _gone_since(self, since: float) -> Sequence[InstanceInfo]:
        def body(conn: sqlite3.Connection, _now: float) -> list[InstanceInfo]:
            rows = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE gone_at >= ?", (since,)
            ).fetchall()
            return [_instance_from_row(r) for r in rows]

        return await (await self._db()).snapshot(body)

    async def _acquire(self, name: str, token: int | None, ttl_s: float) -> Lease:
        holder_id = self.instance_id

        def body(conn: sqlite3.Connection, now: float) -> Lease:
            row = conn.execute(
                "SELECT holder_id, token, expires_at FROM instance_leases WHERE name = ?",
                (name,),
            ).fetchone()
            current = 0 if row is None else int(row["token"])
            if row is not None and row["holder_id"] and row["expires_at"] > now:
                if row["holder_id"] == holder_id and token == current:
                    conn.execute(
                        "UPDATE instance_leases SET expires_at = ? WHERE name = ?",
                        (now + ttl_s, name),
                    )
                    return Lease(name, True, current, holder_id, now + ttl_s)
                return Lease(name, False, None, row["holder_id"], row["expires_at"])
            conn.execute(
                "INSERT INTO instance_leases (name, holder_id, token, expires_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " holder_id = excluded.holder_id, token = excluded.token,"
                " expires_at = excluded.expires_at",
                (name, holder_id, current + 1, now + ttl_s),
            )
            return Lease(name, True, current + 1, holder_id, now + ttl_s)

        return await (await self._db()).transaction(body)

    async def _release(self, name: str, token: int) -> bool:
        def body(conn: sqlite3.Connection, _now: float) -> bool:
            changed = conn.execute(
                "UPDATE instance_leases SET holder_id = NULL, expires_at = 0"
                " WHERE name = ? AND holder_id = ? AND token = ?",
                (name, self.instance_id, token),
            ).rowcount
            return bool(changed)

        return await (await self._db()).transaction(body)
