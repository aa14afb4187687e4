"""JSON log lines from structlog and the standard library: correlation ids, and never a
secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from aragora.observability.logging import (
    REDACTED,
    bind_correlation_id,
    configure_logging,
    correlation_scope,
    current_correlation_id,
    get_logger,
    is_sensitive_name,
    redact_text,
    reset_correlation_id,
)
from aragora.tenancy import generate_token

TOKEN = generate_token()[1]
"""A real API token (``acp_...``): it must never reach a log line."""


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured into a buffer; the previous configuration is restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging(json=True, level="info", stream=buffer)
    yield buffer
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_stdlib_and_structlog_lines_carry_the_correlation_id(stream: io.StringIO) -> None:
    with correlation_scope("req-42") as correlation_id:
        assert correlation_id == current_correlation_id() == "req-42"
        logging.getLogger("aragora.test").warning("claimed %d tasks", 3, extra={"agent": "a"})
        get_logger("aragora.test").info("task_done", task_id="t1", duration_s=0.5)
    logging.getLogger("aragora.test").info("outside")
    assert current_correlation_id() is None

    first, second, third = _lines(stream)
    assert first["event"] == "claimed 3 tasks" and first["level"] == "warning"
    assert first["logger"] == "aragora.test" and first["agent"] == "a"
    assert first["correlation_id"] == "req-42" and first["timestamp"].endswith("Z")
    assert second == {
        "event": "task_done",
        "task_id": "t1",
        "duration_s": 0.5,
        "level": "info",
        "logger": "aragora.test",
        "timestamp": second["timestamp"],
        "correlation_id": "req-42",
    }
    assert "correlation_id" not in third


def test_secrets_never_reach_a_line(stream: io.StringIO) -> None:
    token_scope = bind_correlation_id()
    try:
        std = logging.getLogger("aragora.secrets")
        std.warning("login with %s failed", TOKEN, extra={"token": TOKEN, "api_key": "k-123"})
        std.info("headers", extra={"headers": {"Authorization": f"Bearer {TOKEN}", "x": "1"}})
        get_logger("aragora.secrets").info(
            "configured",
            password="hunter2",
            secret_key="s3cr3t-value",
            webhook={"url": "http://h/", "secret": "whsec-1"},
            note=f"client sent Authorization: Bearer {TOKEN}",
            items=[{"refresh_token": "r-1"}],
            idempotency_key=None,
        )
        try:
            raise RuntimeError(f"bad token {TOKEN}")
        except RuntimeError:
            std.exception("request failed")
    finally:
        reset_correlation_id(token_scope)

    text = stream.getvalue()
    for secret in (TOKEN, "k-123", "hunter2", "s3cr3t-value", "whsec-1", "r-1"):
        assert secret not in text
    lines = _lines(stream)
    assert lines[0]["event"] == f"login with {REDACTED} failed"
    assert lines[0]["token"] == REDACTED and lines[0]["api_key"] == REDACTED
    assert lines[1]["headers"] == {"Authorization": REDACTED, "x": "1"}
    assert lines[2]["password"] == REDACTED and lines[2]["secret_key"] == REDACTED
    assert lines[2]["webhook"] == {"url": "http://h/", "secret": REDACTED}
    assert lines[2]["note"] == f"client sent Authorization: Bearer {REDACTED}"
    assert lines[2]["items"] == [{"refresh_token": REDACTED}]
    assert lines[2]["idempotency_key"] is None
    assert "RuntimeError: bad token [REDACTED]" in lines[3]["exception"]
    assert len({line["correlation_id"] for line in lines}) == 1


def test_levels_below_the_configured_one_are_dropped(stream: io.StringIO) -> None:
    logging.getLogger("aragora.quiet").debug("hidden")
    get_logger("aragora.quiet").debug("hidden too")
    get_logger("aragora.quiet").error("shown")
    assert [line["event"] for line in _lines(stream)] == ["shown"]


async def test_each_asyncio_task_keeps_its_own_correlation_id(stream: io.StringIO) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def request(correlation_id: str) -> None:
        with correlation_scope(correlation_id):
            logging.getLogger("aragora.req").info("begin")
            if correlation_id == "a":
                started.set()
                await release.wait()
            else:
                await started.wait()
                release.set()
            logging.getLogger("aragora.req").info("end")

    await asyncio.gather(request("a"), request("b"))
    by_id: dict[str, list[str]] = {}
    for line in _lines(stream):
        by_id.setdefault(line["correlation_id"], []).append(line["event"])
    assert by_id == {"a": ["begin", "end"], "b": ["begin", "end"]}


def test_agent_sdk_fields_are_spread_into_keys(stream: io.StringIO) -> None:
    logging.getLogger("aragora.agent").info(
        "x", extra={"event": "agent_started", "fields": {"agent_id": "a1", "token": TOKEN}}
    )
    (line,) = _lines(stream)
    assert line["event"] == "agent_started" and line["agent_id"] == "a1"
    assert line["token"] == REDACTED


def test_console_lines_are_redacted_too() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    try:
        handler = configure_logging(json=False, level="debug", stream=buffer)
        again = configure_logging(json=False, level="debug", stream=buffer)
        assert handler not in root.handlers and again in root.handlers, "replaced, not added"
        logging.getLogger("aragora.console").debug("token %s", TOKEN)
    finally:
        for extra in root.handlers:
            if extra not in handlers:
                root.removeHandler(extra)
                extra.close()
        root.setLevel(level)
        structlog.reset_defaults()
    assert buffer.getvalue().count("\n") == 1
    assert TOKEN not in buffer.getvalue() and REDACTED in buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("token", True),
        ("lease_token", True),
        ("X-Api-Key", True),
        ("apiKey", True),
        ("Authorization", True),
        ("db_password", True),
        ("client_secret", True),
        ("refresh_token", True),
        ("ARAGORA_ENCRYPTION_KEYS", True),
        ("password_hash", True),
        ("task_id", False),
        ("token_id", False),
        ("key_prefix", False),
        ("keystone", False),
        ("alert_id", False),
        ("monkey", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert is_sensitive_name(name) is sensitive


def test_redact_text_cuts_credentials_out_of_free_text() -> None:
    assert redact_text(f"use {TOKEN} now") == f"use {REDACTED} now"
    assert redact_text("basic dXNlcjpwYXNz") == f"basic {REDACTED}"
    assert redact_text("nothing to hide") == "nothing to hide"


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="chatty", stream=io.StringIO())
