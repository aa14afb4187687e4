"""AuditLog on every store: appends form one chain (also from many coordinators at
once), paging and export walk it, verification passes on an untouched chain."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from aragora.audit import GENESIS_HASH, AuditEvent, AuditLog, Outcome, verify_export
from aragora.control_plane import ControlPlaneCoordinator, ValidationError
from aragora.tenancy.models import Action, Principal, Role
from tests.audit.conftest import append_many
from tests.conftest import CoordinatorFactory


async def test_first_event_links_to_genesis_and_reads_back_as_returned(audit: AuditLog) -> None:
    principal = Principal(workspace_id="default", role=Role.SUBMITTER, token_id="tok-7")
    event = await audit.append(
        "default",
        principal=principal,
        action=Action.TASK_SUBMIT,
        resource="task:abc",
        outcome=Outcome.DENIED,
        correlation_id="req-1",
        client_address="192.0.2.1",
        details={"reason": "quota", "limit": 5, "ratio": 0.1},
    )
    assert (event.seq, event.prev_hash) == (1, GENESIS_HASH)
    assert (event.principal, event.action, event.outcome) == ("tok-7", "task.submit", "denied")
    assert event.hash == event.compute_hash()
    events, next_after = await audit.page("default")
    assert events == [event]
    assert next_after is None


async def test_event_time_is_the_store_clock(audit: AuditLog, cp: ControlPlaneCoordinator) -> None:
    cp.store.set_clock_offset(3600.0)
    before_ms = round((time.time() + 3600.0) * 1000)
    (event,) = await append_many(audit, 1)
    after_ms = round((time.time() + 3600.0) * 1000)
    assert before_ms - 1000 <= event.time_ms <= after_ms + 1000


async def test_many_appends_form_one_chain_that_verifies(audit: AuditLog) -> None:
    events = await append_many(audit, 250)
    assert [e.seq for e in events] == list(range(1, 251))
    result = await audit.verify("default")
    assert (result.ok, result.checked, result.first_broken_seq, result.reason) == (
        True,
        250,
        None,
        None,
    )
    assert (result.head_seq, result.head_hash) == (250, events[-1].hash)


@pytest.mark.parametrize("max_batch", [1, 100])
async def test_concurrent_appends_from_three_coordinators_form_one_unbroken_chain(
    cp: ControlPlaneCoordinator, cp_factory: CoordinatorFactory, max_batch: int
) -> None:
    coordinators = [cp, await cp_factory(), await cp_factory()]
    logs = [AuditLog.for_store(c.store, max_batch=max_batch) for c in coordinators]
    per_log = 60
    appended = await asyncio.gather(
        *(
            log.append(
                "default",
                principal=f"tok-{n}",
                action="task.claim",
                resource=f"task:{n}-{i}",
                outcome="allowed",
            )
            for i in range(per_log)
            for n, log in enumerate(logs)
        )
    )
    total = per_log * len(logs)
    assert sorted(e.seq for e in appended) == list(range(1, total + 1))
    result = await logs[1].verify("default")
    assert (result.ok, result.checked) == (True, total)
    stored, _ = await logs[2].page("default", limit=1000)
    assert stored == sorted(appended, key=lambda e: e.seq)
    assert len({e.resource for e in stored}) == total
    for log in logs:
        await log.close()


async def test_workspaces_have_chains_of_their_own(audit: AuditLog) -> None:
    await append_many(audit, 3, "alpha")
    (beta,) = await append_many(audit, 1, "beta")
    assert (beta.seq, beta.prev_hash, beta.workspace_id) == (1, GENESIS_HASH, "beta")
    assert (await audit.verify("alpha")).checked == 3
    assert (await audit.verify("beta")).checked == 1
    events, _ = await audit.page("alpha")
    assert {e.workspace_id for e in events} == {"alpha"}


async def test_an_empty_workspace_verifies_and_pages_empty(audit: AuditLog) -> None:
    result = await audit.verify("nobody")
    assert (result.ok, result.checked, result.head_seq) == (True, 0, 0)
    assert await audit.page("nobody") == ([], None)


async def test_paging_walks_the_chain_in_order(audit: AuditLog) -> None:
    await append_many(audit, 25)
    seen: list[int] = []
    after: int | None = 0
    cursors: list[int | None] = []
    while after is not None:
        events, after = await audit.page("default", after_seq=after, limit=10)
        seen += [e.seq for e in events]
        cursors.append(after)
    assert seen == list(range(1, 26))
    assert cursors == [10, 20, None]
    events, after = await audit.page("default", after_seq=15, limit=10)
    assert ([e.seq for e in events], after) == (list(range(16, 26)), None)
    assert await audit.page("default", after_seq=25) == ([], None)


@pytest.mark.parametrize(
    ("after_seq", "limit", "field"),
    [(-1, 10, "after_seq"), (0, 0, "limit"), (0, 1001, "limit"), (True, 10, "after_seq")],
)
async def test_paging_rejects_bad_arguments(
    audit: AuditLog, after_seq: int, limit: int, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await audit.page("default", after_seq=after_seq, limit=limit)
    assert info.value.field == field


async def test_export_writes_json_lines_that_verify_on_their_own(audit: AuditLog) -> None:
    events = await append_many(audit, 12)
    out = io.StringIO()
    assert await audit.export("default", out) == 12
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    assert verify_export("default", lines).ok
    assert not verify_export("default", lines[:5] + lines[6:]).ok


async def test_an_invalid_event_writes_nothing(audit: AuditLog) -> None:
    with pytest.raises(ValidationError):
        await audit.append(
            "default", principal="system", action="x", resource="r", outcome="perhaps"
        )
    assert (await audit.verify("default")).head_seq == 0
    assert (await append_many(audit, 1))[0].seq == 1


def _one(log: AuditLog, resource: str) -> Coroutine[Any, Any, AuditEvent]:
    return log.append("default", principal="system", action="x", resource=resource, outcome="error")


async def test_an_event_handed_to_the_store_is_written_even_if_its_caller_is_cancelled(
    audit: AuditLog,
) -> None:
    caller = asyncio.create_task(_one(audit, "task:kept"))
    await asyncio.sleep(0)  # one turn of the loop: the caller hands its batch to a writer
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await audit.close()  # waits for the writer
    events, _ = await audit.page("default")
    assert [e.resource for e in events] == ["task:kept"]
    await audit.close()


async def test_an_event_still_queued_when_its_caller_is_cancelled_is_not_written(
    audit: AuditLog,
) -> None:
    first = asyncio.create_task(_one(audit, "task:first"))
    queued = asyncio.create_task(_one(audit, "task:queued"))
    await asyncio.sleep(0)  # one turn: the first is being written, the second waits its turn
    queued.cancel()
    assert (await first).seq == 1
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (await _one(audit, "task:next")).seq == 2
    events, _ = await audit.page("default")
    assert [e.resource for e in events] == ["task:first", "task:next"]
