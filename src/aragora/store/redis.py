"""RedisStore: the distributed store. Every transition is one Lua script.

Scripts live in ``lua/`` as package files; each is sent as ``_lib.lua`` (shared rules,
key layout and conventions, documented there) followed by the script body. All keys of
a workspace share the hash tag ``{workspace_id}``, so every script touches one slot.
Notifications travel over pub/sub: one pattern subscription per store object feeds an
in-process hub that wakes waiting claims and result waits.

The same code runs on one Redis server (``redis://``, ``rediss://``, ``unix://``) and on
a Redis Cluster (``redis+cluster://host:port[,host:port...]``, ``rediss+cluster://``):
commands and scripts go through redis-py's cluster client, which routes each by its
first key, and the subscription is a plain connection to one node (a cluster forwards
every ``PUBLISH`` to all nodes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import json
import logging
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeAlias, cast
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from aragora.control_plane.config import ControlPlaneConfig
from aragora.control_plane.errors import (
    AgentNotFoundError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    Alert,
    AttemptError,
    BreakerInfo,
    BreakerState,
    BudgetPeriod,
    HeartbeatResult,
    ReapReport,
    SpendReport,
    Task,
    TaskCounts,
    TaskPriority,
    TaskStatus,
    WorkspaceLimits,
)
from aragora.store.base import ClaimOutcome, NewTask, Store, TaskPage
from aragora.store.notify import NotificationHub, Watch, ready_channel, task_channel
from aragora.store.rules import BREAKER_BUCKETS, agent_status, budget_period_key

logger = logging.getLogger(__name__)

_SCRIPT_NAMES = (
    "submit",
    "claim",
    "complete",
    "fail",
    "cancel",
    "retry",
    "register",
    "heartbeat",
    "deregister",
    "reap",
    "rewrite",
    "counts",
)
REAP_BATCH = 500
LEASE_TOKEN_BYTES = 16
POOL_WAIT_S = 10.0
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""URL schemes that select Redis Cluster mode."""

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
"""The client a ``RedisStore`` holds: one server's or a cluster's."""

# Replaces a hash in one step (a cluster client has no MULTI): KEYS[1] the hash, ARGV
# field/value pairs.
_REPLACE_HASH_LUA = """
redis.call('DEL', KEYS[1])
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
"""


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where a Redis Cluster is and how to log in: the parsed ``redis+cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.startswith(CLUSTER_SCHEMES)


def parse_cluster_url(url: str) -> ClusterAddress:
    """Parse ``redis+cluster://[user:password@]host:port[,host:port...][/0]``.

    Any reachable node listed is enough to find the others. A cluster has only database
    0, and no query options are understood; both are refused with ``ConfigError``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis+cluster", "rediss+cluster"):
        raise ConfigError(f"not a Redis Cluster URL: {url!r}")
    if "?" in rest or "#" in rest:
        raise ConfigError("Redis Cluster URLs take no query options")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ConfigError("a Redis Cluster has only database 0")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        if item.startswith("["):  # [IPv6]:port
            host, _, port_part = item[1:].partition("]")
            port_text = port_part.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigError(f"Redis Cluster URL {url!r} names an empty host")
        if port_text and not (port_text.isascii() and port_text.isdigit()):
            raise ConfigError(f"Redis Cluster URL {url!r} has a bad port {port_text!r}")
        nodes.append((host, int(port_text) if port_text else 6379))
    return ClusterAddress(tuple(nodes), username, password, scheme == "rediss+cluster")


def _load_script_source(name: str) -> str:
    package = resources.files("aragora.store") / "lua"
    lib = (package / "_lib.lua").read_text(encoding="utf-8")
    body = (package / f"{name}.lua").read_text(encoding="utf-8")
    return lib + "\n" + body


def _ms_to_s(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    return int(value) / 1000


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _complete_args(task_id: str, lease_token: str, result: Any, cost: float | None) -> list[Any]:
    return [task_id, lease_token, _compact_json(result), "" if cost is None else repr(cost)]


def _lease_tokens(count: int) -> list[str]:
    """``count`` fresh lease tokens (as ``secrets.token_urlsafe(16)``, one system call)."""
    raw = secrets.token_bytes(LEASE_TOKEN_BYTES * count)
    return [
        base64.urlsafe_b64encode(raw[i : i + LEASE_TOKEN_BYTES]).rstrip(b"=").decode()
        for i in range(0, len(raw), LEASE_TOKEN_BYTES)
    ]


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisStore(Store):
    """Store on Redis (or Valkey). Safe to share between any number of processes."""

    def __init__(self, config: ControlPlaneConfig, url: str) -> None:
        super().__init__(config)
        self._url = url
        self._cluster = parse_cluster_url(url) if is_cluster_url(url) else None
        # A cluster client opens connections per node without waiting for a free one,
        # so calls wait here instead: at most this many run at once.
        self._gate = (
            asyncio.Semaphore(config.redis_max_connections) if self._cluster is not None else None
        )
        self._pubsub_node: tuple[str, int] | None = None
        self._redis: RedisClient | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._hub = NotificationHub()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._known_workspaces: set[str] = set()
        self._closed = False
        self._settings = json.dumps(
            {
                "backoff_base_ms": config.retry_backoff_base_s * 1000,
                "backoff_max_ms": config.retry_backoff_max_s * 1000,
                "jitter": config.retry_jitter,
                "br_window_ms": config.breaker_window_s * 1000,
                "br_min_calls": config.breaker_min_calls,
                "br_rate": config.breaker_error_rate,
                "br_open_ms": config.breaker_open_s * 1000,
                "br_half_max": config.breaker_half_open_max_calls,
            }
        )

    # -- keys --------------------------------------------------------------------
    def _base(self, workspace_id: str) -> str:
        return f"{self.config.key_prefix}{{{workspace_id}}}:"

    def _channel(self, workspace_id: str) -> str:
        return f"{self.config.key_prefix}ev:{workspace_id}"

    @property
    def _workspaces_key(self) -> str:
        return f"{self.config.key_prefix}workspaces"

    # -- lifecycle ---------------------------------------------------------------
    @property
    def is_cluster(self) -> bool:
        """Whether this store runs on a Redis Cluster."""
        return self._cluster is not None

    @property
    def notification_node(self) -> tuple[str, int] | None:
        """On a cluster, the ``(host, port)`` of the node the notification subscription
        uses (the latest one tried); ``None`` on a single server."""
        return self._pubsub_node

    async def open(self) -> None:
        if self._redis is not None:
            return
        if self._cluster is not None:
            cluster = self._cluster
            self._redis = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
                decode_responses=True,
                max_connections=self.config.redis_max_connections,
                username=cluster.username,
                password=cluster.password,
                ssl=cluster.ssl,
            )
        else:
            # A blocking pool makes a burst of more concurrent calls than connections
            # wait for a free connection instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                decode_responses=True,
                max_connections=self.config.redis_max_connections,
                timeout=POOL_WAIT_S,
            )
            self._redis = aioredis.Redis.from_pool(pool)
        client = cast(aioredis.Redis, self._redis)
        for name in _SCRIPT_NAMES:
            self._scripts[name] = client.register_script(_load_script_source(name))
        self._scripts["_replace_hash"] = client.register_script(_REPLACE_HASH_LUA)
        try:
            await self.ping()
        except StoreUnavailableError:
            await self._redis.aclose()
            self._redis = None
            raise
        self._listener = asyncio.create_task(self._listen(), name="aragora-redis-notify")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=10)
        except TimeoutError:
            await self.close()
            raise StoreUnavailableError("could not subscribe to store notifications") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()

    @property
    def _client(self) -> aioredis.Redis:
        # A cluster client has the same command methods (redis-py types them apart), so
        # the code above the client is written once, typed against the plain client.
        if self._redis is None or self._closed:
            raise StoreUnavailableError("store is not open")
        return cast(aioredis.Redis, self._redis)

    async def _call(self, operation: Callable[[], Awaitable[Any] | Any]) -> Any:
        """Run one Redis operation, translating driver errors at the boundary.

        redis-py's asyncio methods are typed as "awaitable or value" in some releases,
        so the result is awaited when it is awaitable. On a cluster at most
        ``redis_max_connections`` operations run at once; an operation must not call
        ``_call`` again."""
        async with self._gate if self._gate is not None else contextlib.nullcontext():
            try:
                result = operation()
                return await result if inspect.isawaitable(result) else result
            except (RedisError, RedisClusterException, OSError) as exc:
                raise StoreUnavailableError(f"redis: {exc}") from exc

    # -- extensions ----------------------------------------------------------------
    @property
    def client(self) -> aioredis.Redis:
        """The store's client (one pool per store) for extensions such as tenancy.

        On a cluster this is a ``redis.asyncio.RedisCluster``, which has the same command
        methods and routes each command by its key: multi-key commands must stay within
        one slot, pipelines cannot be transactions (atomic multi-key writes are scripts)
        and cannot carry keyless commands such as ``TIME``."""
        return self._client

    def workspace_key(self, workspace_id: str, suffix: str) -> str:
        """A key in the workspace's hash slot: ``<prefix>{<workspace>}:<suffix>``."""
        return self._base(workspace_id) + suffix

    def global_key(self, suffix: str) -> str:
        """A key outside every workspace: ``<prefix><suffix>``."""
        return self.config.key_prefix + suffix

    def clock_offset_ms(self) -> int:
        """The test clock offset to pass to scripts that read ``TIME``."""
        return round(self.clock_offset_s * 1000)

    async def call(self, operation: Callable[[], Awaitable[Any] | Any]) -> Any:
        """Run one Redis operation, translating driver errors into StoreUnavailableError."""
        return await self._call(operation)

    async def ping(self) -> None:
        await self._call(self._client.ping)

    async def now(self) -> float:
        seconds, micros = await self._call(self._client.time)
        return float(seconds) + float(micros) / 1_000_000 + self.clock_offset_s

    def _argv(self, workspace_id: str, args: Sequence[Any]) -> list[Any]:
        """The ARGV every script starts with (see ``lua/_lib.lua``), then ``args``."""
        return [
            round(self.clock_offset_s * 1000),
            self._channel(workspace_id),
            self._settings,
            random.randrange(1, 2**31),
            *args,
        ]

    async def _run(self, name: str, workspace_id: str, *args: Any) -> Any:
        argv = self._argv(workspace_id, args)
        script = self._scripts[name]
        return await self._call(lambda: script(keys=[self._base(workspace_id)], args=argv))

    async def _run_many(self, name: str, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run ``name`` once per ``(workspace_id, args)`` in one pipelined round trip (one
        per node on a cluster); each run is still its own atomic script."""
        script = self._scripts[name]
        if isinstance(self._redis, RedisCluster):
            return await self._run_many_cluster(self._redis, script, calls)
        # Raw EVALSHA: a script object queued into a pipeline would first cost a round
        # trip of SCRIPT EXISTS. The script is loaded by its first single run; should the
        # server not know it (restart, SCRIPT FLUSH), the runs answered NOSCRIPT did not
        # run and are repeated one by one, which loads it.
        sha = script.sha
        argvs = [(workspace_id, self._argv(workspace_id, args)) for workspace_id, args in calls]

        async def send() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for workspace_id, argv in argvs:
                pipe.execute_command("EVALSHA", sha, 1, self._base(workspace_id), *argv)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

        replies: list[Any] = await self._call(send)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                workspace_id, argv = argvs[i]
                keys = [self._base(workspace_id)]
                replies[i] = await self._call(functools.partial(script, keys=keys, args=argv))
            elif isinstance(reply, Exception):
                raise StoreUnavailableError(f"redis: {reply}") from reply
        return replies

    async def _run_many_cluster(
        self,
        client: RedisCluster,
        script: AsyncScript,
        calls: Sequence[tuple[str, Sequence[Any]]],
    ) -> list[Any]:
        """``_run_many`` on a cluster: a cluster pipeline of raw ``EVALSHA`` commands
        (redis-py's script objects cannot queue into one). A node that does not know the
        script yet answers NOSCRIPT without running it; those runs are repeated one by
        one, which loads the script on every node first."""
        sha = script.sha
        argvs = [(workspace_id, self._argv(workspace_id, args)) for workspace_id, args in calls]

        async def send() -> list[Any]:
            pipe = client.pipeline()
            for workspace_id, argv in argvs:
                pipe.execute_command("EVALSHA", sha, 1, self._base(workspace_id), *argv)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

        replies: list[Any] = await self._call(send)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                workspace_id, argv = argvs[i]
                keys = [self._base(workspace_id)]
                replies[i] = await self._call(functools.partial(script, keys=keys, args=argv))
            elif isinstance(reply, Exception):
                raise StoreUnavailableError(f"redis: {reply}") from reply
        return replies

    async def _remember_workspace(self, workspace_id: str) -> None:
        if workspace_id not in self._known_workspaces:
            await self._call(lambda: self._client.sadd(self._workspaces_key, workspace_id))
            self._known_workspaces.add(workspace_id)

    # -- notifications -------------------------------------------------------------
    async def _listen(self) -> None:
        pattern = f"{self.config.key_prefix}ev:*"
        channel_prefix_len = len(self.config.key_prefix) + 3
        backoff_s = 0.05
        attempt = 0
        while True:
            node_client = self._pubsub_client(attempt)
            attempt += 1
            pubsub = (node_client or self._client).pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                self._subscribed.set()
                # Messages published while we were not subscribed are lost: re-check all.
                self._hub.notify_all()
                backoff_s = 0.05
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    workspace_id = message["channel"][channel_prefix_len:]
                    data: str = message["data"]
                    if data == "ready":
                        self._hub.notify(ready_channel(workspace_id))
                    elif data.startswith("done:"):
                        self._on_done(workspace_id, data[5:])
            except (RedisError, OSError):
                logger.warning("store notifications lost; reconnecting in %.2fs", backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                if node_client is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await node_client.aclose()

    def _on_done(self, workspace_id: str, message: str) -> None:
        """Wake the waiters of a task that turned terminal, handing them the task when
        the message carries it (``lua/_lib.lua`` ``publish_done``) and anyone waits."""
        task_id, _, inline = message.partition(" ")
        channel = task_channel(workspace_id, task_id)
        if not self._hub.has_watchers(channel):
            return
        task: Task | None = None
        if inline:
            try:
                task = self._task(_pairs(json.loads(inline)))
            except (ValueError, KeyError, TypeError):
                logger.warning("undecodable task in a notification for task %s", task_id)
        self._hub.notify(channel, task)

    def _pubsub_client(self, attempt: int) -> aioredis.Redis | None:
        """On a cluster, a plain client of one node to subscribe on (a cluster forwards
        every ``PUBLISH`` to all nodes): the startup nodes and the nodes the cluster
        client has discovered in turn, the next one after each failure. ``None`` on a
        single server, whose own client subscribes."""
        cluster = self._cluster
        if cluster is None:
            return None
        candidates = list(cluster.nodes)
        if isinstance(self._redis, RedisCluster):
            for node in self._redis.get_nodes():
                if (node.host, int(node.port)) not in candidates:
                    candidates.append((node.host, int(node.port)))
        host, port = candidates[attempt % len(candidates)]
        self._pubsub_node = (host, port)
        return aioredis.Redis(
            host=host,
            port=port,
            username=cluster.username,
            password=cluster.password,
            ssl=cluster.ssl,
            decode_responses=True,
        )

    def watch_ready(self, workspace_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._hub.watch(ready_channel(workspace_id))

    def watch_task(self, workspace_id: str, task_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._hub.watch(task_channel(workspace_id, task_id))

    # -- decoding --------------------------------------------------------------------
    @staticmethod
    def _task(h: dict[str, str]) -> Task:
        status = TaskStatus(h["status"])
        result_raw = h.get("result", "")
        cost_raw = h.get("cost", "")
        return Task(
            id=h["id"],
            task_type=h["type"],
            payload=json.loads(h["payload"]),
            priority=TaskPriority.from_rank(int(h["prio"])),
            status=status,
            required_capabilities=tuple(c for c in h["caps"].split(",") if c),
            workspace_id=h["ws"],
            attempt=int(h["attempt"]),
            max_retries=int(h["max_retries"]),
            timeout_s=int(h["timeout_ms"]) / 1000,
            created_at=int(h["created"]) / 1000,
            lease_token=h.get("lease") or None,
            agent_id=h.get("agent") or None,
            result=json.loads(result_raw) if result_raw else None,
            error=h.get("error") or None,
            errors=tuple(AttemptError.from_dict(e) for e in json.loads(h.get("errors") or "[]")),
            started_at=_ms_to_s(h.get("started")),
            finished_at=_ms_to_s(h.get("finished")),
            lease_expires_at=_ms_to_s(h.get("lease_exp")),
            available_at=_ms_to_s(h.get("avail")),
            idempotency_key=h.get("idem") or None,
            metadata=json.loads(h.get("meta") or "{}"),
            cost=float(cost_raw) if cost_raw else None,
            cost_estimate=float(h["est"]) if h.get("est") else None,
        )

    @staticmethod
    def _agent(h: dict[str, str], running: Sequence[str]) -> AgentInfo:
        return AgentInfo(
            agent_id=h["id"],
            workspace_id=h["ws"],
            capabilities=tuple(c for c in h["caps"].split(",") if c),
            model=h["model"],
            status=agent_status(h.get("offline") == "1", h.get("draining") == "1", len(running)),
            max_concurrent_tasks=int(h["max"]),
            running_task_ids=tuple(sorted(running)),
            registered_at=int(h["registered"]) / 1000,
            last_heartbeat_at=int(h["last_hb"]) / 1000,
            metadata=json.loads(h.get("meta") or "{}"),
        )

    @staticmethod
    def _raise_for(code: str, workspace_id: str, object_id: str) -> None:
        if code == "task_not_found":
            raise TaskNotFoundError(object_id)
        if code == "agent_not_found":
            raise AgentNotFoundError(object_id)
        if code == "lease_lost":
            raise LeaseLostError(object_id)
        if code == "cancelled":
            raise TaskCancelledError(object_id)
        if code == "invalid_state":
            raise InvalidStateError(f"task {object_id!r} is not in a state that allows this")
        raise StoreUnavailableError(f"unexpected store answer {code!r}")

    def _task_reply(self, reply: list[Any], workspace_id: str, task_id: str) -> Task:
        if reply[0] == "err":
            self._raise_for(reply[1], workspace_id, task_id)
        return self._task(_pairs(reply[1]))

    @staticmethod
    def _raise_limit(reply: list[Any]) -> None:
        if reply[1] == "quota":
            raise QuotaExceededError(reply[2], float(reply[3]), float(reply[4]))
        if reply[1] == "budget":
            raise BudgetExceededError(float(reply[2]), float(reply[3]), float(reply[4]))

    async def _soft_limit_alert(self, workspace_id: str) -> None:
        report = await self.get_spend(workspace_id)
        self._emit(
            Alert(
                kind="budget.soft_limit",
                workspace_id=workspace_id,
                at=await self.now(),
                details={
                    "period": report.period,
                    "budget": report.budget,
                    "spent": report.spent,
                    "reserved": report.reserved,
                },
            )
        )

    # -- tasks ---------------------------------------------------------------------
    async def submit(self, task: NewTask) -> tuple[Task, bool]:
        await self._remember_workspace(task.workspace_id)
        reply = await self._run("submit", task.workspace_id, *self._submit_args(task))
        return await self._submit_outcome(task, reply)

    async def submit_many(
        self, tasks: Sequence[NewTask]
    ) -> list[tuple[Task, bool] | ControlPlaneError]:
        for workspace_id in {t.workspace_id for t in tasks}:
            await self._remember_workspace(workspace_id)
        replies = await self._run_many(
            "submit", [(t.workspace_id, self._submit_args(t)) for t in tasks]
        )
        outcomes: list[tuple[Task, bool] | ControlPlaneError] = []
        for task, reply in zip(tasks, replies, strict=True):
            try:
                outcomes.append(await self._submit_outcome(task, reply))
            except (QuotaExceededError, BudgetExceededError) as exc:
                outcomes.append(exc)
        return outcomes

    @staticmethod
    def _submit_args(task: NewTask) -> list[Any]:
        return [
            task.id,
            task.task_type,
            _compact_json(task.payload),
            task.priority.rank,
            ",".join(task.required_capabilities),
            round(task.timeout_s * 1000),
            task.max_retries,
            task.idempotency_key or "",
            json.dumps(task.metadata, separators=(",", ":")),
            task.workspace_id,
            task.payload_bytes,
            "" if task.cost_estimate is None else repr(task.cost_estimate),
        ]

    async def _submit_outcome(self, task: NewTask, reply: list[Any]) -> tuple[Task, bool]:
        if reply[0] == "err":
            self._raise_limit(reply)
        if reply[0] == "existing":
            return self._task(_pairs(reply[1])), False
        if int(reply[2]):
            await self._soft_limit_alert(task.workspace_id)
        created = Task(
            id=task.id,
            task_type=task.task_type,
            payload=task.payload,
            priority=task.priority,
            status=TaskStatus.PENDING,
            required_capabilities=task.required_capabilities,
            workspace_id=task.workspace_id,
            attempt=0,
            max_retries=task.max_retries,
            timeout_s=round(task.timeout_s * 1000) / 1000,
            created_at=int(reply[1]) / 1000,
            idempotency_key=task.idempotency_key,
            metadata=task.metadata,
            cost_estimate=task.cost_estimate,
        )
        return created, True

    async def claim(self, workspace_id: str, agent_id: str, max_tasks: int = 1) -> ClaimOutcome:
        leases = _lease_tokens(max(max_tasks, 1))
        reply = await self._run("claim", workspace_id, agent_id, *leases)
        if reply[0] == "err":
            self._raise_for(reply[1], workspace_id, agent_id)
        if reply[0] == "tasks":
            return ClaimOutcome(tuple(self._task(_pairs(h)) for h in reply[1]))
        due_ms = int(reply[1])
        return ClaimOutcome((), None if due_ms < 0 else due_ms / 1000)

    async def complete(
        self, workspace_id: str, task_id: str, lease_token: str, result: Any, cost: float | None
    ) -> Task:
        args = _complete_args(task_id, lease_token, result, cost)
        reply = await self._run("complete", workspace_id, *args)
        return await self._complete_outcome(workspace_id, task_id, reply)

    async def complete_many(
        self, workspace_id: str, items: Sequence[tuple[str, str, Any, float | None]]
    ) -> list[Task | ControlPlaneError]:
        replies = await self._run_many(
            "complete", [(workspace_id, _complete_args(*item)) for item in items]
        )
        outcomes: list[Task | ControlPlaneError] = []
        for (task_id, *_), reply in zip(items, replies, strict=True):
            try:
                outcomes.append(await self._complete_outcome(workspace_id, task_id, reply))
            except (NotFoundError, ConflictError, TaskCancelledError) as exc:
                outcomes.append(exc)
        return outcomes

    async def _complete_outcome(self, workspace_id: str, task_id: str, reply: list[Any]) -> Task:
        task = self._task_reply(reply, workspace_id, task_id)
        if int(reply[2]):
            await self._soft_limit_alert(workspace_id)
        return task

    async def fail(
        self, workspace_id: str, task_id: str, lease_token: str, error: str, retryable: bool
    ) -> Task:
        reply = await self._run(
            "fail", workspace_id, task_id, lease_token, error, "1" if retryable else "0"
        )
        return self._task_reply(reply, workspace_id, task_id)

    async def cancel(self, workspace_id: str, task_id: str) -> Task:
        reply = await self._run("cancel", workspace_id, task_id)
        return self._task_reply(reply, workspace_id, task_id)

    async def retry(self, workspace_id: str, task_id: str) -> Task:
        reply = await self._run("retry", workspace_id, task_id)
        return self._task_reply(reply, workspace_id, task_id)

    async def rewrite_task_data(
        self,
        workspace_id: str,
        task_id: str,
        *,
        payload: tuple[Any, Any] | None = None,
        result: tuple[Any, Any] | None = None,
    ) -> bool:
        args: list[str] = []
        for name, change in (("payload", payload), ("result", result)):
            if change is not None:
                expected, new = change
                args += [name, _compact_json(expected), _compact_json(new)]
        if not args:
            return False
        return bool(await self._run("rewrite", workspace_id, task_id, *args))

    async def get_task(self, workspace_id: str, task_id: str) -> Task:
        key = self._base(workspace_id) + "t:" + task_id
        h: dict[str, str] = await self._call(lambda: self._client.hgetall(key))
        if not h:
            raise TaskNotFoundError(task_id)
        return self._task(h)

    async def get_tasks(self, workspace_id: str, task_ids: Sequence[str]) -> list[Task | None]:
        if not task_ids:
            return []
        base = self._base(workspace_id)

        async def fetch() -> list[dict[str, str]]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hgetall(base + "t:" + task_id)
            rows: list[dict[str, str]] = await pipe.execute()
            return rows

        return [self._task(h) if h else None for h in await self._call(fetch)]

    async def _get_tasks(self, workspace_id: str, ids: Sequence[str]) -> list[Task]:
        return [t for t in await self.get_tasks(workspace_id, ids) if t is not None]

    async def list_tasks(
        self,
        workspace_id: str,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        index = self._base(workspace_id) + ("idx:" + status.value if status else "idx:all")
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise ValidationError("cursor", "is not a cursor returned by a previous page")
        upper = f"({int(cursor)}" if cursor else "+inf"
        found: list[Task] = []
        while len(found) < limit:
            batch = limit - len(found) if task_type is None else max(limit * 2, 50)
            rows: list[tuple[str, float]] = await self._call(
                functools.partial(
                    self._client.zrevrangebyscore,
                    index,
                    upper,
                    "-inf",
                    start=0,
                    num=batch,
                    withscores=True,
                )
            )
            if not rows:
                return TaskPage(found, None)
            for task in await self._get_tasks(workspace_id, [r[0] for r in rows]):
                if task_type is None or task.task_type == task_type:
                    found.append(task)
            upper = f"({int(rows[-1][1])}"
            if len(rows) < batch:
                break
        found = found[:limit]
        if len(found) < limit:
            return TaskPage(found, None)
        seqs = await self._seq_of(workspace_id, found[-1].id)
        return TaskPage(found, seqs)

    async def _seq_of(self, workspace_id: str, task_id: str) -> str | None:
        key = self._base(workspace_id) + "t:" + task_id
        seq: str | None = await self._call(lambda: self._client.hget(key, "seq"))
        return seq

    async def counts(self, workspace_id: str) -> TaskCounts:
        pending, running, completed, failed, cancelled, delayed = await self._run(
            "counts", workspace_id
        )
        return TaskCounts(pending, delayed, running, completed, failed, cancelled)

    # -- agents --------------------------------------------------------------------
    async def register_agent(
        self,
        workspace_id: str,
        agent_id: str,
        capabilities: tuple[str, ...],
        model: str,
        max_concurrent_tasks: int,
        metadata: dict[str, Any],
    ) -> AgentInfo:
        await self._remember_workspace(workspace_id)
        reply = await self._run(
            "register",
            workspace_id,
            agent_id,
            ",".join(capabilities),
            model,
            max_concurrent_tasks,
            json.dumps(metadata, separators=(",", ":")),
            workspace_id,
        )
        if reply[0] == "err":
            self._raise_limit(reply)
        return self._agent(_pairs(reply[1]), reply[2])

    async def heartbeat(
        self, workspace_id: str, agent_id: str, draining: bool | None
    ) -> HeartbeatResult:
        flag = "" if draining is None else ("1" if draining else "0")
        reply = await self._run("heartbeat", workspace_id, agent_id, flag)
        if reply[0] == "err":
            self._raise_for(reply[1], workspace_id, agent_id)
        return HeartbeatResult(self._agent(_pairs(reply[1]), reply[2]), tuple(sorted(reply[3])))

    async def deregister_agent(self, workspace_id: str, agent_id: str) -> None:
        reply = await self._run("deregister", workspace_id, agent_id)
        if reply[0] == "err":
            self._raise_for(reply[1], workspace_id, agent_id)

    async def _get_agents(self, workspace_id: str, agent_ids: Sequence[str]) -> list[AgentInfo]:
        base = self._base(workspace_id)

        async def fetch() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for agent_id in agent_ids:
                pipe.hgetall(base + "a:" + agent_id)
                pipe.smembers(base + "at:" + agent_id)
            rows: list[Any] = await pipe.execute()
            return rows

        rows = await self._call(fetch)
        return [self._agent(rows[i], list(rows[i + 1])) for i in range(0, len(rows), 2) if rows[i]]

    async def get_agent(self, workspace_id: str, agent_id: str) -> AgentInfo:
        agents = await self._get_agents(workspace_id, [agent_id])
        if not agents:
            raise AgentNotFoundError(agent_id)
        return agents[0]

    async def list_agents(
        self,
        workspace_id: str,
        *,
        capability: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[AgentInfo]:
        key = self._base(workspace_id) + "agentset"
        ids: set[str] = await self._call(lambda: self._client.smembers(key))
        agents = await self._get_agents(workspace_id, sorted(ids))
        return [
            a
            for a in agents
            if (capability is None or capability in a.capabilities)
            and (status is None or a.status is status)
        ]

    async def get_breaker(self, workspace_id: str, agent_id: str) -> BreakerInfo:
        key = self._base(workspace_id) + "br:" + agent_id
        h: dict[str, str] = await self._call(lambda: self._client.hgetall(key))
        now = await self.now()
        bucket_s = self.config.breaker_window_s / BREAKER_BUCKETS
        current = int(now // bucket_s)
        calls = failures = 0
        for name, value in h.items():
            if name.startswith("b") and name[1:].isdigit():
                index, c, f = (int(part) for part in value.split(":"))
                if index > current - BREAKER_BUCKETS:
                    calls += c
                    failures += f
        return BreakerInfo(
            agent_id=agent_id,
            state=BreakerState(h.get("state", "closed")),
            calls=calls,
            failures=failures,
            opened_at=_ms_to_s(h.get("opened")),
            half_open_in_flight=int(h.get("hin", "0")),
        )

    # -- limits and spend ----------------------------------------------------------
    async def set_workspace_limits(self, workspace_id: str, limits: WorkspaceLimits) -> None:
        await self._remember_workspace(workspace_id)
        fields = {
            "max_agents": limits.max_agents,
            "max_pending": limits.max_pending_tasks,
            "max_running": limits.max_running_tasks,
            "max_payload": limits.max_payload_bytes,
            "budget": None if limits.budget is None else repr(limits.budget),
            "period": limits.budget_period.value,
            "soft": repr(limits.budget_soft_ratio),
        }
        key = self._base(workspace_id) + "limits"
        args = [part for k, v in fields.items() if v is not None for part in (k, v)]
        script = self._scripts["_replace_hash"]
        await self._call(lambda: script(keys=[key], args=args))

    async def get_workspace_limits(self, workspace_id: str) -> WorkspaceLimits:
        key = self._base(workspace_id) + "limits"
        h: dict[str, str] = await self._call(lambda: self._client.hgetall(key))

        def number(name: str) -> int | None:
            return int(h[name]) if name in h else None

        return WorkspaceLimits(
            max_agents=number("max_agents"),
            max_pending_tasks=number("max_pending"),
            max_running_tasks=number("max_running"),
            max_payload_bytes=number("max_payload"),
            budget=float(h["budget"]) if "budget" in h else None,
            budget_period=BudgetPeriod(h.get("period", BudgetPeriod.MONTHLY.value)),
            budget_soft_ratio=float(h.get("soft", "0.8")),
        )

    async def get_spend(self, workspace_id: str) -> SpendReport:
        limits = await self.get_workspace_limits(workspace_id)
        period = budget_period_key(await self.now(), limits.budget_period.value)
        key = self._base(workspace_id) + "spend:" + period

        async def fetch() -> list[dict[str, str]]:
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(key)
            pipe.hgetall(key + ":type")
            pipe.hgetall(key + ":model")
            rows: list[dict[str, str]] = await pipe.execute()
            return rows

        totals, by_type, by_model = await self._call(fetch)
        return SpendReport(
            period=period,
            budget=limits.budget,
            reserved=max(float(totals.get("reserved", 0)), 0.0),
            spent=float(totals.get("spent", 0)),
            by_task_type={k: float(v) for k, v in by_type.items()},
            by_model={k: float(v) for k, v in by_model.items()},
        )

    # -- maintenance ---------------------------------------------------------------
    async def reap(self, workspace_id: str) -> ReapReport:
        totals = [0, 0, 0, 0, 0]
        while True:
            reply = await self._run(
                "reap",
                workspace_id,
                round(self.config.heartbeat_timeout * 1000),
                round(self.config.result_ttl_s * 1000),
                REAP_BATCH,
            )
            for i in range(5):
                totals[i] += int(reply[i])
            if not int(reply[5]):
                break
        return ReapReport(*totals)

    async def list_workspaces(self) -> Sequence[str]:
        members: set[str] = await self._call(lambda: self._client.smembers(self._workspaces_key))
        return sorted(members)

    async def iterate_keys(self) -> AsyncIterator[str]:
        """Every key of this deployment (diagnostics and tests)."""
        async for key in self._client.scan_iter(match=self.config.key_prefix + "*", count=1000):
            yield key
