"""Checking a chain: every link, every hash, no gaps, and the head at the end.

``ChainVerifier`` is fed stored events in ``seq`` order and stops at the first event
that does not hold. It is used by ``AuditLog.verify`` on the store and by
``verify_export`` on an exported file, so a copy of the trail can be checked away from
the deployment that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aragora.audit.base import ChainHead, CorruptEvent, StoredEvent
from aragora.audit.events import GENESIS_HASH, AuditEvent


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking one chain.

    ``checked`` counts the events found intact before the first break (all of them when
    ``ok``). ``first_broken_seq`` is the first position whose event is missing, altered
    or out of place (``None`` when ``ok``, or when the stored head itself is
    unreadable); ``reason`` says what was wrong (``None`` when ``ok``). ``head_seq`` and
    ``head_hash`` are the stored head the chain was checked against (for an export, its
    last intact event): record them elsewhere to detect a later rewrite of the whole
    chain, which no check inside the store can see.
    """

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


class ChainVerifier:
    """Incremental check of one workspace's chain, fed events in ``seq`` order.

    With the stored ``head``, ``finish`` also checks that the chain ends where the head
    says, so removing the newest events is noticed.
    """

    def __init__(self, workspace_id: str, head: ChainHead | None = None) -> None:
        self.workspace_id = workspace_id
        self._head = head
        self._expected_seq = 1
        self._prev_hash = GENESIS_HASH
        self._broken: VerifyResult | None = None

    @property
    def broken(self) -> VerifyResult | None:
        """The failed result once a break was found, else ``None``."""
        return self._broken

    def feed(self, item: StoredEvent) -> bool:
        """Check the next stored event; False (and ``broken`` set) at the first break."""
        if self._broken is not None:
            return False
        seq = self._expected_seq
        if item.seq != seq:
            if item.seq > seq:
                return self._fail(seq, f"event {seq} is missing (the next stored is {item.seq})")
            return self._fail(
                seq, f"event {item.seq} is repeated or out of order where {seq} was expected"
            )
        if isinstance(item, CorruptEvent):
            return self._fail(seq, item.reason)
        reason = self._check(item)
        if reason is not None:
            return self._fail(seq, reason)
        self._expected_seq += 1
        self._prev_hash = item.hash
        return True

    def _check(self, event: AuditEvent) -> str | None:
        if event.workspace_id != self.workspace_id:
            return f"the event belongs to workspace {event.workspace_id!r}"
        if event.prev_hash != self._prev_hash:
            previous = (
                "the genesis hash" if event.seq == 1 else f"the hash of event {event.seq - 1}"
            )
            return f"prev_hash does not match {previous}"
        if event.compute_hash() != event.hash:
            return "the event's content does not match its hash (altered)"
        return None

    def finish(self) -> VerifyResult:
        """The result once every event was fed (or the first break)."""
        if self._broken is not None:
            return self._broken
        last_seq = self._expected_seq - 1
        head = self._head
        if head is not None:
            if head.seq > last_seq:
                return self._result_broken(
                    last_seq + 1,
                    f"events {last_seq + 1} to {head.seq} are missing (the head is at {head.seq})",
                )
            if head.seq < last_seq:
                return self._result_broken(
                    head.seq + 1, f"events after the head (seq {head.seq}) were added"
                )
            if head.hash != self._prev_hash:
                return self._result_broken(
                    last_seq, f"the head's hash does not match event {last_seq}"
                )
        return VerifyResult(ok=True, checked=last_seq, **self._head_fields())

    def _head_fields(self) -> dict[str, Any]:
        if self._head is not None:
            return {"head_seq": self._head.seq, "head_hash": self._head.hash}
        return {"head_seq": self._expected_seq - 1, "head_hash": self._prev_hash}

    def _fail(self, seq: int, reason: str) -> bool:
        self._result_broken(seq, reason)
        return False

    def _result_broken(self, seq: int, reason: str) -> VerifyResult:
        self._broken = VerifyResult(
            ok=False,
            checked=self._expected_seq - 1,
            first_broken_seq=seq,
            reason=reason,
            **self._head_fields(),
        )
        return self._broken


def verify_export(workspace_id: str, lines: Iterable[str]) -> VerifyResult:
    """Check the JSON lines written by ``AuditLog.export`` for one workspace."""
    verifier = ChainVerifier(workspace_id)
    expected_seq = 1
    for line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            item: StoredEvent = AuditEvent.from_dict(data)
        except (ValueError, TypeError) as exc:
            item = CorruptEvent(expected_seq, f"line cannot be decoded: {exc}")
        if not verifier.feed(item):
            break
        expected_seq += 1
    return verifier.finish()
