"""Damage done directly in the store (raw Redis commands, raw SQL on the SQLite file) is
found by ``verify``, which names the first broken seq; appends refuse to fork."""

from __future__ import annotations

import io
import json

import pytest

from aragora.audit import AuditIntegrityError, AuditLog, verify_export
from aragora.control_plane import ControlPlaneCoordinator
from tests.audit import raw
from tests.audit.conftest import append_many


async def test_an_altered_event_is_found_at_its_seq(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    await append_many(audit, 10)
    await raw.set_column(cp, "default", 5, "outcome", "denied")
    result = await audit.verify("default")
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 5, 4)
    assert result.reason is not None and "altered" in result.reason


async def test_altered_details_are_found(audit: AuditLog, cp: ControlPlaneCoordinator) -> None:
    await append_many(audit, 6)
    edited = {"i": 3, "ratio": 1.5}
    value = json.dumps(edited) if raw.is_sqlite(cp) else edited
    await raw.set_column(cp, "default", 4, "details", value)
    assert (await audit.verify("default")).first_broken_seq == 4


async def test_an_altered_event_with_a_recomputed_hash_breaks_the_next_link(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    events = await append_many(audit, 6)
    forged = type(events[2])(**{**events[2].to_dict(), "resource": "task:forged"})
    await raw.set_column(cp, "default", 3, "resource", "task:forged")
    await raw.set_column(cp, "default", 3, "hash", forged.compute_hash())
    result = await audit.verify("default")
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert result.reason is not None and "prev_hash" in result.reason


async def test_a_deleted_event_is_found(audit: AuditLog, cp: ControlPlaneCoordinator) -> None:
    await append_many(audit, 10)
    await raw.delete_event(cp, "default", 4)
    result = await audit.verify("default")
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 4, 3)
    assert result.reason is not None and "missing" in result.reason


async def test_deleted_newest_events_are_found_through_the_head(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    await append_many(audit, 10)
    await raw.delete_event(cp, "default", 10)
    await raw.delete_event(cp, "default", 9)
    result = await audit.verify("default")
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 9, 8)
    assert result.head_seq == 10


async def test_reordered_events_are_found(audit: AuditLog, cp: ControlPlaneCoordinator) -> None:
    await append_many(audit, 8)
    await raw.swap_events(cp, "default", 3, 4)
    result = await audit.verify("default")
    assert (result.ok, result.first_broken_seq) == (False, 3)


async def test_an_undecodable_event_is_found_and_paging_refuses_it(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    await append_many(audit, 5)
    await raw.set_raw_body(cp, "default", 2, "{not json")
    result = await audit.verify("default")
    assert (result.ok, result.first_broken_seq) == (False, 2)
    with pytest.raises(AuditIntegrityError) as info:
        await audit.page("default")
    assert info.value.seq == 2
    out = io.StringIO()
    assert await audit.export("default", out) == 5
    lines = out.getvalue().splitlines()
    assert json.loads(lines[1])["seq"] == 2 and "error" in json.loads(lines[1])
    assert verify_export("default", lines).first_broken_seq == 2


async def test_a_chain_copied_into_another_workspace_does_not_verify_there(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    await append_many(audit, 4, "alpha")
    await append_many(audit, 1, "beta")  # creates the schema on SQLite and a chain to replace
    await raw.delete_event(cp, "beta", 1)
    await raw.delete_head(cp, "beta")
    await raw.copy_chain(cp, "alpha", "beta")
    assert (await audit.verify("alpha")).ok
    result = await audit.verify("beta")
    assert (result.ok, result.first_broken_seq) == (False, 1)


async def test_append_refuses_to_fork_when_the_head_is_lost(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    await append_many(audit, 3)
    await raw.delete_head(cp, "default")
    with pytest.raises(AuditIntegrityError, match="head"):
        await append_many(audit, 1)
    events, _ = await audit.page("default")
    assert [e.seq for e in events] == [1, 2, 3]


async def test_appends_go_on_after_damage_and_verify_still_names_it(
    audit: AuditLog, cp: ControlPlaneCoordinator
) -> None:
    await append_many(audit, 5)
    await raw.delete_event(cp, "default", 5)
    (event,) = await append_many(audit, 1, start=5)
    assert event.seq == 6
    assert (await audit.verify("default")).first_broken_seq == 5
