"""The hash chain itself, without a store: canonical encoding, hashes, and what the
verifier reports for each kind of damage."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
from typing import Any

import pytest

from aragora.audit import GENESIS_HASH, AuditEvent, ChainVerifier, Outcome, verify_export
from aragora.audit.base import ChainHead, CorruptEvent
from aragora.audit.events import AuditDraft, canonical_json, chain_events
from aragora.control_plane import ValidationError
from aragora.tenancy.models import Action, Principal, Role


def _drafts(n: int, workspace_id: str = "ws") -> list[AuditDraft]:
    return [
        AuditDraft.create(
            workspace_id,
            principal="tok-1",
            action=Action.TASK_SUBMIT,
            resource=f"task:{i}",
            outcome=Outcome.ALLOWED,
            details={"i": i, "ratio": i / 7},
        )
        for i in range(n)
    ]


def _chain(n: int, workspace_id: str = "ws") -> list[AuditEvent]:
    return chain_events(_drafts(n, workspace_id), head_seq=0, head_hash=GENESIS_HASH, time_ms=1)


def _verify(events: list[Any], head: ChainHead | None = None) -> Any:
    verifier = ChainVerifier("ws", head)
    for event in events:
        if not verifier.feed(event):
            break
    return verifier.finish()


def test_hash_is_sha256_of_the_canonical_json_of_every_other_field() -> None:
    event = _chain(1)[0]
    fields = event.to_dict()
    del fields["hash"]
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert event.hash == hashlib.sha256(text.encode()).hexdigest()
    assert event.prev_hash == GENESIS_HASH == "0" * 64
    assert event.compute_hash() == event.hash


def test_each_event_names_the_hash_of_the_one_before() -> None:
    events = _chain(5)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert _verify(events, ChainHead(5, events[-1].hash)).ok


def test_chaining_continues_from_a_head() -> None:
    events = chain_events(_drafts(2), head_seq=41, head_hash="a" * 64, time_ms=1)
    assert [e.seq for e in events] == [42, 43]
    assert events[0].prev_hash == "a" * 64


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'


@pytest.mark.parametrize(
    "change",
    [
        {"resource": "task:other"},
        {"outcome": "denied"},
        {"principal": "system"},
        {"details": {"i": 2, "ratio": 0.5}},
        {"time_ms": 2},
        {"correlation_id": "c"},
    ],
)
def test_an_edited_field_breaks_the_chain_at_that_event(change: dict[str, Any]) -> None:
    events = _chain(5)
    events[2] = dataclasses.replace(events[2], **change)
    result = _verify(events)
    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.checked == 2
    assert result.reason is not None and "altered" in result.reason


def test_an_edited_event_with_a_recomputed_hash_breaks_the_next_link() -> None:
    events = _chain(5)
    edited = dataclasses.replace(events[2], resource="task:other")
    events[2] = dataclasses.replace(edited, hash=edited.compute_hash())
    result = _verify(events)
    assert result.first_broken_seq == 4
    assert result.reason is not None and "prev_hash" in result.reason


def test_a_removed_event_is_reported_as_missing() -> None:
    events = _chain(5)
    del events[1]
    result = _verify(events)
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 2, 1)
    assert result.reason is not None and "missing" in result.reason


def test_reordered_events_break_the_chain() -> None:
    events = _chain(5)
    events[1], events[2] = (
        dataclasses.replace(events[2], seq=2),
        dataclasses.replace(events[1], seq=3),
    )
    assert _verify(events).first_broken_seq == 2


def test_a_repeated_event_breaks_the_chain() -> None:
    events = _chain(3)
    result = _verify([events[0], events[1], events[1], events[2]])
    assert result.first_broken_seq == 3


def test_removed_newest_events_are_found_through_the_head() -> None:
    events = _chain(5)
    result = _verify(events[:3], ChainHead(5, events[-1].hash))
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 4, 3)
    assert (result.head_seq, result.head_hash) == (5, events[-1].hash)


def test_a_head_that_names_another_hash_is_a_break() -> None:
    events = _chain(3)
    result = _verify(events, ChainHead(3, "f" * 64))
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_an_event_of_another_workspace_breaks_the_chain() -> None:
    result = _verify(_chain(2, workspace_id="other"))
    assert result.first_broken_seq == 1
    assert result.reason is not None and "'other'" in result.reason


def test_an_undecodable_event_breaks_the_chain() -> None:
    events: list[Any] = _chain(3)
    events[1] = CorruptEvent(2, "cannot decode")
    assert _verify(events).first_broken_seq == 2


def test_an_empty_chain_is_whole() -> None:
    result = _verify([], ChainHead())
    assert (result.ok, result.checked, result.head_hash) == (True, 0, GENESIS_HASH)


def test_exported_lines_verify_and_an_edited_line_is_found() -> None:
    events = _chain(4)
    lines = [canonical_json(e.to_dict()) for e in events]
    assert verify_export("ws", io.StringIO("\n".join(lines) + "\n")).ok
    data = json.loads(lines[2])
    data["outcome"] = "denied"
    lines[2] = json.dumps(data)
    result = verify_export("ws", lines)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    lines[2] = "not json"
    assert verify_export("ws", lines).first_broken_seq == 3


def test_event_from_dict_rejects_unknown_missing_or_mistyped_fields() -> None:
    data = _chain(1)[0].to_dict()
    assert AuditEvent.from_dict(data) == _chain(1)[0]
    for broken in (
        {**data, "extra": 1},
        {k: v for k, v in data.items() if k != "details"},
        {**data, "seq": "1"},
        {**data, "time_ms": 1.5},
        {**data, "hash": "short"},
        {**data, "details": []},
    ):
        with pytest.raises(ValueError, match=r"."):
            AuditEvent.from_dict(broken)


def test_a_principal_is_recorded_by_its_token_id() -> None:
    principal = Principal(workspace_id="ws", role=Role.ADMIN, token_id="tok-9")
    draft = AuditDraft.create(
        "ws", principal=principal, action="token.manage", resource="token:x", outcome="allowed"
    )
    assert draft.principal == "tok-9"


def test_details_are_normalised_to_their_json_round_trip() -> None:
    details: dict[Any, Any] = {1: (1, 2), 2: {"b": [True]}}
    draft = AuditDraft.create(
        "ws", principal="system", action="a", resource="", outcome="error", details=details
    )
    assert draft.details == {"1": [1, 2], "2": {"b": [True]}}
    details[2]["b"].append(False)
    assert draft.details["2"] == {"b": [True]}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"workspace_id": "bad space"}, "workspace_id"),
        ({"principal": ""}, "principal"),
        ({"principal": 7}, "principal"),
        ({"action": ""}, "action"),
        ({"action": "x" * 65}, "action"),
        ({"resource": "r" * 513}, "resource"),
        ({"outcome": "maybe"}, "outcome"),
        ({"correlation_id": ""}, "correlation_id"),
        ({"client_address": "\ud800"}, "client_address"),
        ({"details": ["not", "an", "object"]}, "details"),
        ({"details": {"x": float("nan")}}, "details"),
        ({"details": {"x": object()}}, "details"),
        ({"details": {"x": "y" * 20_000}}, "details"),
    ],
)
def test_invalid_fields_name_the_field(overrides: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {
        "workspace_id": "ws",
        "principal": "system",
        "action": "task.submit",
        "resource": "task:1",
        "outcome": "allowed",
    } | overrides
    workspace_id = fields.pop("workspace_id")
    with pytest.raises(ValidationError) as info:
        AuditDraft.create(workspace_id, **fields)
    assert info.value.field == field
