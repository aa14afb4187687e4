"""The webhook sink against a real local HTTP receiver: signatures, retries, final
refusals, the bounded queue and the drain on close."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from aragora.alerts import AlertEvent, AlertSeverity, AlertStatus, WebhookSink
from aragora.alerts.webhook import sign, verify_signature
from aragora.control_plane import ConfigError
from tests.alerts.conftest import SECRET, WebhookReceiver


def _event(n: int = 0) -> AlertEvent:
    return AlertEvent(
        key=f"agent_offline:ws:a{n}",
        kind="agent_offline",
        status=AlertStatus.FIRING,
        severity=AlertSeverity.WARNING,
        summary=f"agent a{n} is offline",
        workspace_id="ws",
        details={"n": n},
        fired_at=1000.0 + n,
        resolved_at=None,
        at=1000.0 + n,
        instance_id="i1",
    )


def _sink(url: str, **kwargs: Any) -> WebhookSink:
    options: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 0.02, **kwargs}
    return WebhookSink(url, SECRET, **options)


def test_signatures_bind_the_body_the_timestamp_and_the_secret() -> None:
    body = b'{"key":"x"}'
    now = int(time.time())
    signature = sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, body, str(now), signature)
    assert verify_signature(SECRET.decode(), body, str(now), signature)
    assert not verify_signature(SECRET, body + b" ", str(now), signature)
    assert not verify_signature(SECRET, body, str(now + 1), signature)
    assert not verify_signature(b"other", body, str(now), signature)
    assert not verify_signature(SECRET, body, None, signature)
    assert not verify_signature(SECRET, body, "12a", signature)
    old = now - 3600
    assert not verify_signature(SECRET, body, str(old), sign(SECRET, old, body))
    assert verify_signature(SECRET, body, str(old), sign(SECRET, old, body), now_s=old + 10)


async def test_events_are_delivered_in_order_and_signed(receiver: WebhookReceiver) -> None:
    async with _sink(receiver.url) as sink:
        for n in range(3):
            sink.send(_event(n))
        await sink.join()
    requests = await receiver.wait_for(3)
    assert [json.loads(r.body)["details"]["n"] for r in requests] == [0, 1, 2]
    assert len({r.headers["x-aragora-delivery"] for r in requests}) == 3
    for r in requests:
        assert verify_signature(
            SECRET, r.body, r.headers["x-aragora-timestamp"], r.headers["x-aragora-signature"]
        )
    assert json.loads(requests[0].body) == _event(0).to_dict()
    assert sink.stats.delivered == 3 and sink.stats.failed == 0


async def test_server_errors_are_retried_until_the_attempts_run_out(
    receiver: WebhookReceiver,
) -> None:
    receiver.answer_next(503, 502, 500, 500)
    async with _sink(receiver.url, max_attempts=3) as sink:
        sink.send(_event())
        await sink.join()
        sink.send(_event(1))  # the fourth answer is a 500, then 200
        await sink.join()
    assert [r.status for r in receiver.requests] == [503, 502, 500, 500, 200]
    assert sink.stats.failed == 1 and sink.stats.delivered == 1 and sink.stats.retried == 3


async def test_client_errors_are_final(receiver: WebhookReceiver) -> None:
    receiver.answer_next(400)
    async with _sink(receiver.url) as sink:
        sink.send(_event())
        await sink.join()
    assert [r.status for r in receiver.requests] == [400]
    assert sink.stats.failed == 1 and sink.stats.retried == 0


async def test_too_many_requests_is_retried(receiver: WebhookReceiver) -> None:
    receiver.answer_next(429)
    async with _sink(receiver.url) as sink:
        sink.send(_event())
        await sink.join()
    assert [r.status for r in receiver.requests] == [429, 200]


async def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _sink(f"http://127.0.0.1:{port}/", max_attempts=3) as sink:
        sink.send(_event())
        await sink.join()
    assert sink.stats.failed == 1 and sink.stats.retried == 2 and sink.stats.delivered == 0


async def test_a_full_queue_drops_instead_of_blocking(receiver: WebhookReceiver) -> None:
    sink = _sink(receiver.url, max_queued_events=2)
    for n in range(5):
        sink.send(_event(n))  # not started yet: nothing is taken off the queue
    assert sink.stats.dropped == 3
    await sink.start()
    await sink.close()
    assert [json.loads(r.body)["details"]["n"] for r in receiver.requests] == [0, 1]
    sink.send(_event(9))
    assert sink.stats.dropped == 4, "a closed sink accepts nothing"


async def test_close_drains_the_queue(receiver: WebhookReceiver) -> None:
    sink = _sink(receiver.url)
    await sink.start()
    for n in range(5):
        sink.send(_event(n))
    await sink.close()
    await sink.close()  # idempotent
    assert len(receiver.requests) == 5 and sink.stats.delivered == 5


async def test_close_gives_up_after_the_drain_timeout(receiver: WebhookReceiver) -> None:
    receiver.answer_next(*[500] * 100)
    sink = WebhookSink(
        receiver.url,
        SECRET,
        backoff_base_s=0.01,
        backoff_max_s=0.01,
        max_attempts=1000,
        drain_timeout_s=0.05,
    )
    await sink.start()
    sink.send(_event())
    sink.send(_event(1))
    await sink.close()
    assert sink.stats.delivered == 0 and sink.stats.dropped == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: WebhookSink("ftp://x", SECRET),
        lambda: WebhookSink("http://127.0.0.1:1/", b""),
        lambda: _sink("http://127.0.0.1:1/", max_attempts=0),
        lambda: _sink("http://127.0.0.1:1/", max_queued_events=0),
        lambda: _sink("http://127.0.0.1:1/", backoff_base_s=0),
        lambda: _sink("http://127.0.0.1:1/", request_timeout_s=-1),
    ],
)
def test_bad_settings_are_refused(make: Callable[[], WebhookSink]) -> None:
    with pytest.raises(ConfigError):
        make()
