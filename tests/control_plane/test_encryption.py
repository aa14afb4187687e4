"""Encryption at rest through the coordinator: the store never holds a payload or result
in clear, and callers never see ciphertext."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest
import redis

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator, ValidationError
from aragora.crypto import DecryptionError, PayloadCipher

SECRET = "needle-7f3a9c"


def _cipher() -> PayloadCipher:
    key = base64.b64encode(os.urandom(32)).decode()
    return PayloadCipher.from_spec(f"k1:{key}")


def _raw_contents(config: ControlPlaneConfig, redis_url: str) -> str:
    """Everything the store holds, as text."""
    if config.store_url is not None and config.store_url.startswith("sqlite"):
        path = Path(config.store_url.removeprefix("sqlite:///"))
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT payload, result FROM tasks").fetchall()
        finally:
            conn.close()
        return repr(rows)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    parts = []
    for key in client.scan_iter(match=config.key_prefix + "*"):
        if client.type(key) == "hash":
            parts.append(repr(client.hgetall(key)))
    client.close()
    return "\n".join(parts)


async def test_payload_and_result_are_stored_only_as_ciphertext(
    config: ControlPlaneConfig, redis_url: str
) -> None:
    async with ControlPlaneCoordinator(config, run_reaper=False, cipher=_cipher()) as cp:
        await cp.register_agent("a", [], model="m")
        task_id = await cp.submit_task("t", {"secret": SECRET})
        task = await cp.claim_task("a")
        assert task is not None and task.payload == {"secret": SECRET} and task.lease_token
        done = await cp.complete_task(task_id, {"answer": SECRET}, lease_token=task.lease_token)
        assert done.result == {"answer": SECRET}
        assert await cp.wait_for_result(task_id, timeout=1) == {"answer": SECRET}
        assert (await cp.list_tasks()).tasks[0].payload == {"secret": SECRET}
        raw = _raw_contents(config, redis_url)
        assert "$enc" in raw  # the scan does see the stored task
        assert SECRET not in raw


async def test_a_ciphertext_moved_to_another_task_does_not_decrypt(
    cp: ControlPlaneCoordinator,
) -> None:
    cipher = _cipher()
    sealed = ControlPlaneCoordinator(cp.config, store=cp.store, run_reaper=False, cipher=cipher)
    first = await sealed.submit_task("t", {"secret": SECRET})
    second = await sealed.submit_task("t", {"other": 1})
    stolen = (await cp.get_task(first)).payload  # read without the cipher: the envelope
    current = (await cp.get_task(second)).payload
    assert await cp.store.rewrite_task_data("default", second, payload=(current, stolen))
    with pytest.raises(DecryptionError):
        await sealed.get_task(second)


async def test_values_shaped_like_an_envelope_are_refused(cp: ControlPlaneCoordinator) -> None:
    envelope = {"$enc": "v1", "kid": "k", "nonce": "n", "ct": "c"}
    with pytest.raises(ValidationError) as raised:
        await cp.submit_task("t", envelope)
    assert raised.value.field == "payload"
