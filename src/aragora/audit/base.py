"""What an audit store provides, and the errors of a damaged chain.

An ``AuditStore`` keeps, per workspace, the events of one chain and its *head* (the
``seq`` and ``hash`` of the last event appended). The head is kept apart from the events
so that removing the newest events is detected too. ``append`` is atomic: a batch of
events joins the chain after the head current at that instant, or nothing happens, so
any number of processes appending at once build one chain without gaps or forks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aragora.audit.events import GENESIS_HASH, AuditDraft, AuditEvent
from aragora.control_plane.errors import ControlPlaneError


class AuditIntegrityError(ControlPlaneError):
    """The stored chain is damaged where an operation needs it whole.

    Raised by ``append`` when the head and the events disagree (appending would fork the
    chain, so nothing is written) and by ``page`` for an event that cannot be decoded.
    ``AuditLog.verify`` reports the same damage as a result instead of raising.
    """

    def __init__(self, workspace_id: str, reason: str, seq: int | None = None) -> None:
        where = f" at seq {seq}" if seq is not None else ""
        super().__init__(f"audit chain of workspace {workspace_id!r} is damaged{where}: {reason}")
        self.workspace_id = workspace_id
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last event of a chain: its ``seq`` (0 for an empty chain) and ``hash``."""

    seq: int = 0
    hash: str = GENESIS_HASH


@dataclass(frozen=True, slots=True)
class CorruptEvent:
    """A stored event that cannot be decoded (its record was tampered with or damaged)."""

    seq: int
    reason: str


StoredEvent = AuditEvent | CorruptEvent


class AuditStore(Protocol):
    """Storage of hash-chained audit events, one chain per workspace."""

    async def append(self, workspace_id: str, drafts: Sequence[AuditDraft]) -> list[AuditEvent]:
        """Append the drafts, in order, after the current head, atomically; stamp them
        with the store clock. AuditIntegrityError (nothing written) if head and events
        disagree."""
        ...

    async def head(self, workspace_id: str) -> ChainHead:
        """The current head; ``ChainHead()`` for a workspace without events."""
        ...

    async def read(
        self, workspace_id: str, *, after_seq: int, limit: int, max_seq: int | None = None
    ) -> list[StoredEvent]:
        """Up to ``limit`` stored events with ``after_seq < seq <= max_seq``, by seq."""
        ...
