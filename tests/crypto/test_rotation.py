"""rotate_tasks on every store: envelopes sealed by older keys are re-encrypted under the
primary key, everything else is left alone, and a second pass changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aragora.control_plane import ControlPlaneCoordinator, Task, TaskPriority
from aragora.crypto import PayloadCipher, RotationIncompleteError, is_encrypted, rotate_tasks
from aragora.store.base import NewTask
from tests.crypto.keys import new_key


async def _submit_sealed(
    cp: ControlPlaneCoordinator, cipher: PayloadCipher, payload: Any, workspace_id: str = "default"
) -> str:
    task_id = uuid.uuid4().hex
    envelope = cipher.encrypt(payload, workspace_id=workspace_id, task_id=task_id, field="payload")
    await cp.store.submit(
        NewTask(
            id=task_id,
            workspace_id=workspace_id,
            task_type="t",
            payload=envelope,
            priority=TaskPriority.NORMAL,
            required_capabilities=(),
            timeout_s=60.0,
            max_retries=0,
        )
    )
    return task_id


async def _complete_sealed(cp: ControlPlaneCoordinator, cipher: PayloadCipher, result: Any) -> Task:
    """Claim and complete through a coordinator that seals results with ``cipher``; the
    task comes back as stored (sealed)."""
    sealing = ControlPlaneCoordinator(cp.config, store=cp.store, run_reaper=False, cipher=cipher)
    task = await sealing.claim_task("agent")
    assert task is not None and task.lease_token is not None
    await sealing.complete_task(task.id, result, lease_token=task.lease_token)
    return await cp.store.get_task("default", task.id)


def _kid(value: Any) -> str:
    assert is_encrypted(value)
    kid: str = value["kid"]
    return kid


async def test_rotation_reencrypts_old_envelopes_and_nothing_else(
    cp: ControlPlaneCoordinator,
) -> None:
    old_key = new_key()
    old = PayloadCipher.from_spec(f"old:{old_key}")
    payloads = {await _submit_sealed(cp, old, {"n": i}): {"n": i} for i in range(5)}
    clear_id = await cp.submit_task("t", {"clear": True})
    other_id = await _submit_sealed(cp, old, {"elsewhere": 1}, workspace_id="other")
    await cp.register_agent("agent", [], model="m")
    completed = [await _complete_sealed(cp, old, {"result": i}) for i in range(2)]
    before = {t.id: t for t in (await cp.list_tasks(limit=100)).tasks}

    cipher = PayloadCipher.from_spec(f"new:{new_key()},old:{old_key}")
    rewriter = cp.store
    assert await rotate_tasks(rewriter, cipher, ["default"], page_size=2) == 5

    after = {t.id: t for t in (await cp.list_tasks(limit=100)).tasks}
    for task_id, payload in payloads.items():
        task = after[task_id]
        assert _kid(task.payload) == "new"
        bind = {"workspace_id": "default", "task_id": task_id}
        assert cipher.decrypt(task.payload, **bind, field="payload") == payload
        assert (task.status, task.attempt, task.created_at, task.finished_at) == (
            before[task_id].status,
            before[task_id].attempt,
            before[task_id].created_at,
            before[task_id].finished_at,
        )
    for i, done in enumerate(completed):
        result = after[done.id].result
        assert _kid(result) == "new"
        bind = {"workspace_id": "default", "task_id": done.id}
        assert cipher.decrypt(result, **bind, field="result") == {"result": i}
    assert after[clear_id].payload == {"clear": True}
    assert _kid((await cp.get_task(other_id, workspace_id="other")).payload) == "old"

    assert await rotate_tasks(rewriter, cipher, ["default"]) == 0
    assert (await cp.list_tasks(limit=100)).tasks == list(after.values())


async def test_envelopes_that_do_not_decrypt_are_reported_after_the_rest_is_rotated(
    cp: ControlPlaneCoordinator,
) -> None:
    old_key = new_key()
    old = PayloadCipher.from_spec(f"old:{old_key}")
    good_id = await _submit_sealed(cp, old, "fine")
    lost_id = await _submit_sealed(cp, PayloadCipher.from_spec(f"lost:{new_key()}"), "gone")
    cipher = PayloadCipher.from_spec(f"new:{new_key()},old:{old_key}")
    with pytest.raises(RotationIncompleteError) as info:
        await rotate_tasks(cp.store, cipher, ["default"])
    assert info.value.rotated == 1
    assert info.value.failed == [("default", lost_id, "payload")]
    assert _kid((await cp.get_task(good_id)).payload) == "new"
    assert _kid((await cp.get_task(lost_id)).payload) == "lost"


async def test_a_rewrite_is_conditional_on_the_value_being_unchanged(
    cp: ControlPlaneCoordinator,
) -> None:
    cipher = PayloadCipher.from_spec(f"k:{new_key()}")
    task_id = await _submit_sealed(cp, cipher, 1)
    current = (await cp.get_task(task_id)).payload
    rewriter = cp.store
    assert not await rewriter.rewrite_task_data("default", task_id, payload=({"x": 1}, "new"))
    assert not await rewriter.rewrite_task_data("default", "missing", payload=(current, "new"))
    assert (await cp.get_task(task_id)).payload == current
    assert await rewriter.rewrite_task_data("default", task_id, payload=(current, "new"))
    assert (await cp.get_task(task_id)).payload == "new"
