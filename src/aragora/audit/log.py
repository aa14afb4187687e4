"""AuditLog: append to, page through, verify and export a workspace's audit trail.

Appends of one process to one workspace are committed in groups: while one batch is
being written, later appends queue up and go together in the next one (at most
``max_batch``), each batch one atomic store operation. This keeps one round trip per
batch instead of per event and, on Redis, keeps the processes that race for the chain
head few. Correctness never depends on it: the store alone keeps the chain whole.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aragora.audit.base import AuditIntegrityError, AuditStore, CorruptEvent
from aragora.audit.events import AuditDraft, AuditEvent, Outcome, canonical_json
from aragora.audit.verify import ChainVerifier, VerifyResult
from aragora.control_plane.errors import ConfigError, StoreUnavailableError, ValidationError
from aragora.control_plane.models import validate_workspace_id
from aragora.store.base import Store
from aragora.tenancy.models import Principal

MAX_PAGE_LIMIT = 1000
READ_BATCH = 1000


class TextSink(Protocol):
    """Where ``export`` writes: anything with ``write(str)``, such as a text file."""

    def write(self, text: str, /) -> object: ...


@dataclass(slots=True)
class _Pending:
    draft: AuditDraft
    future: asyncio.Future[AuditEvent]


@dataclass(slots=True)
class _Queue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: deque[_Pending] = field(default_factory=deque)


def audit_store_for(store: Store) -> AuditStore:
    """The audit storage that lives in the control plane's own store."""
    from aragora.store.redis import RedisStore
    from aragora.store.sqlite import SqliteStore

    if isinstance(store, RedisStore):
        from aragora.audit.redis_store import RedisAuditStore

        return RedisAuditStore(store)
    if isinstance(store, SqliteStore):
        from aragora.audit.sqlite_store import SqliteAuditStore

        return SqliteAuditStore(store)
    raise ConfigError(f"no audit storage for a {type(store).__name__}")


class AuditLog:
    """The hash-chained audit trail of every workspace (one chain per workspace).

    Use ``AuditLog.for_store(coordinator.store)``; the store must be open before the
    first call. ``close`` waits for appends still being written.
    """

    def __init__(self, audit_store: AuditStore, *, max_batch: int = 100) -> None:
        if max_batch < 1:
            raise ConfigError("max_batch must be at least 1")
        self._store = audit_store
        self._max_batch = max_batch
        self._queues: dict[str, _Queue] = {}
        self._writing: set[asyncio.Task[None]] = set()

    @classmethod
    def for_store(cls, store: Store, *, max_batch: int = 100) -> AuditLog:
        """An audit log kept in the control plane's store (Redis or SQLite)."""
        return cls(audit_store_for(store), max_batch=max_batch)

    async def append(
        self,
        workspace_id: str,
        *,
        principal: Principal | str,
        action: str,
        resource: str,
        outcome: Outcome | str,
        correlation_id: str | None = None,
        client_address: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event to the workspace's chain and return it as stored.

        ``principal`` is the caller (its token id is recorded) or ``"system"``;
        ``action`` is usually an ``aragora.tenancy.models.Action``. Invalid fields raise
        ValidationError and write nothing. Once the event is handed to the store, a
        cancelled caller does not stop it from being written.
        """
        draft = AuditDraft.create(
            workspace_id,
            principal=principal,
            action=action,
            resource=resource,
            outcome=outcome,
            correlation_id=correlation_id,
            client_address=client_address,
            details=details,
        )
        queue = self._queues.setdefault(workspace_id, _Queue())
        pending = _Pending(draft, asyncio.get_running_loop().create_future())
        queue.waiting.append(pending)
        try:
            async with queue.lock:
                while not pending.future.done() and queue.waiting:
                    batch = self._next_batch(queue)
                    if not batch:
                        continue
                    writer = asyncio.create_task(self._write(workspace_id, batch))
                    self._writing.add(writer)
                    writer.add_done_callback(self._writing.discard)
                    await asyncio.shield(writer)
            return await pending.future
        except asyncio.CancelledError:
            pending.future.cancel()
            raise

    def _next_batch(self, queue: _Queue) -> list[_Pending]:
        """Up to ``max_batch`` queued appends, oldest first, leaving out those whose
        caller was cancelled before they were handed to the store."""
        batch: list[_Pending] = []
        while queue.waiting and len(batch) < self._max_batch:
            pending = queue.waiting.popleft()
            if not pending.future.done():
                batch.append(pending)
        return batch

    async def _write(self, workspace_id: str, batch: list[_Pending]) -> None:
        """Write one batch and settle each caller's future; never raises to the caller."""
        try:
            events = await self._store.append(workspace_id, [p.draft for p in batch])
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, Exception)
                else StoreUnavailableError(
                    "the audit append was interrupted; it may not have been written"
                )
            )
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for p, event in zip(batch, events, strict=True):
            if not p.future.done():
                p.future.set_result(event)

    async def page(
        self, workspace_id: str, after_seq: int = 0, limit: int = 100
    ) -> tuple[list[AuditEvent], int | None]:
        """Events with ``seq > after_seq``, oldest first, and the ``after_seq`` of the
        next page (``None`` when this page reached the end of the chain)."""
        validate_workspace_id(workspace_id)
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise ValidationError("after_seq", "must be an integer of 0 or more")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_PAGE_LIMIT
        ):
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_PAGE_LIMIT}")
        stored = await self._store.read(workspace_id, after_seq=after_seq, limit=limit + 1)
        events: list[AuditEvent] = []
        for item in stored[:limit]:
            if isinstance(item, CorruptEvent):
                raise AuditIntegrityError(workspace_id, item.reason, item.seq)
            events.append(item)
        more = len(stored) > limit
        return events, (events[-1].seq if more else None)

    async def verify(self, workspace_id: str) -> VerifyResult:
        """Check the whole chain up to its current head: every hash, every link, no
        gaps, and that the last event is the head. Damage is reported, not raised
        (``first_broken_seq`` is ``None`` only when the stored head is unreadable)."""
        validate_workspace_id(workspace_id)
        try:
            head = await self._store.head(workspace_id)
        except AuditIntegrityError as exc:
            return VerifyResult(ok=False, checked=0, reason=exc.reason)
        verifier = ChainVerifier(workspace_id, head)
        after_seq = 0
        while after_seq < head.seq:
            stored = await self._store.read(
                workspace_id, after_seq=after_seq, limit=READ_BATCH, max_seq=head.seq
            )
            if not stored:
                break
            for item in stored:
                if not verifier.feed(item):
                    return verifier.finish()
            after_seq = stored[-1].seq
        return verifier.finish()

    async def export(self, workspace_id: str, out: TextSink) -> int:
        """Write the chain up to its current head to ``out`` as JSON lines and return
        how many lines were written.

        Each line is the canonical JSON of one event with every field, ``hash``
        included, so ``verify_export`` (or any SHA-256 tool) can check the copy. An
        event that cannot be decoded is written as ``{"seq": n, "error": reason}`` so
        the export still shows where the damage is.
        """
        validate_workspace_id(workspace_id)
        head = await self._store.head(workspace_id)
        written = 0
        after_seq = 0
        while after_seq < head.seq:
            stored = await self._store.read(
                workspace_id, after_seq=after_seq, limit=READ_BATCH, max_seq=head.seq
            )
            if not stored:
                break
            for item in stored:
                if isinstance(item, CorruptEvent):
                    line = canonical_json({"seq": item.seq, "error": item.reason})
                else:
                    line = canonical_json(item.to_dict())
                out.write(line + "\n")
                written += 1
            after_seq = max(after_seq + 1, stored[-1].seq)
        return written

    async def close(self) -> None:
        """Wait for batches still being written. Idempotent."""
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
