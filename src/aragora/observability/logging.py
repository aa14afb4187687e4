"""Structured logs: JSON lines with a correlation id, and secrets never written.

:func:`configure_logging` sets up structlog and the standard library together: both
``structlog.get_logger()`` and every existing ``logging.getLogger(...)`` call end in
one handler whose :class:`structlog.stdlib.ProcessorFormatter` renders one JSON object
per line (or a plain console line with ``json=False``), with

* ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message), and the
  record's ``extra`` fields;
* ``correlation_id``: the id bound in the current context (:func:`bind_correlation_id`,
  :func:`correlation_scope`). It lives in a :class:`contextvars.ContextVar`, so each
  request, and every asyncio task it starts, carries its own;
* secrets redacted (:func:`redact_sensitive`): the value of every field named like a
  secret (``secret``, ``authorization``, ``password`` anywhere in the name, or ending
  in ``token`` or ``key``; also inside nested dicts) becomes ``[REDACTED]``, and API
  tokens (``acp_...``) and ``Bearer``/``Basic`` credentials are cut out of every
  string, the message included.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar, Token
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED: Final = "[REDACTED]"
SENSITIVE_NAME_PARTS: Final = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "secret",
        "secrets",
    }
)
"""A field is redacted when any part of its name (split at ``_``, ``-``, ``.``, spaces
and lower-to-upper case changes) is one of these ..."""
SENSITIVE_LAST_NAME_PARTS: Final = frozenset({"key", "keys", "token", "tokens"})
"""... or when its last part is one of these (``api_key``, ``lease_token``, but not
``key_prefix`` or ``token_id``, which name public things)."""

_SECRET_PATTERNS: Final = (
    (re.compile(r"acp_[0-9A-Za-z]{8,128}_[0-9A-Za-z]{6}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
)
_NAME_SPLIT_RE: Final = re.compile(r"[^a-z0-9]+")
_CAMEL_RE: Final = re.compile(r"([a-z0-9])([A-Z])")
_MAX_DEPTH: Final = 8
_HANDLER_MARK: Final = "_aragora_log_handler"

_correlation_id: ContextVar[str | None] = ContextVar("aragora_correlation_id", default=None)


# -- correlation ids ------------------------------------------------------------------------
def bind_correlation_id(correlation_id: str | None = None) -> Token[str | None]:
    """Make ``correlation_id`` (a new random one if ``None``) the id of the current
    context; pass the returned token to :func:`reset_correlation_id` when done."""
    return _correlation_id.set(correlation_id or uuid.uuid4().hex)


def reset_correlation_id(token: Token[str | None]) -> None:
    """Restore the correlation id that was current before :func:`bind_correlation_id`."""
    _correlation_id.reset(token)


def current_correlation_id() -> str | None:
    """The correlation id of the current context, if one is bound."""
    return _correlation_id.get()


@contextlib.contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Bind a correlation id for the ``with`` block (a new one if ``None``) and yield it."""
    token = bind_correlation_id(correlation_id)
    try:
        yield _correlation_id.get() or ""
    finally:
        reset_correlation_id(token)


# -- processors -----------------------------------------------------------------------------
def add_correlation_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``correlation_id`` from the current context unless the event names one."""
    correlation_id = _correlation_id.get()
    if correlation_id is not None:
        event_dict.setdefault("correlation_id", correlation_id)
    return event_dict


def is_sensitive_name(name: str) -> bool:
    """True if the field ``name`` holds a secret by its name (see the module docstring)."""
    parts = [p for p in _NAME_SPLIT_RE.split(_CAMEL_RE.sub(r"\1_\2", name).lower()) if p]
    if not parts:
        return False
    return parts[-1] in SENSITIVE_LAST_NAME_PARTS or any(
        part in SENSITIVE_NAME_PARTS for part in parts
    )


def redact_text(text: str) -> str:
    """``text`` with API tokens and ``Bearer``/``Basic`` credentials cut out."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if _hides(k, v) else _redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def _hides(name: object, value: Any) -> bool:
    return isinstance(name, str) and value is not None and is_sensitive_name(name)


def redact_sensitive(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Redact secrets from every field of the event (see the module docstring)."""
    for name, value in list(event_dict.items()):
        event_dict[name] = REDACTED if _hides(name, value) else _redact(value, 0)
    return event_dict


def _flatten_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Spread a stdlib record's ``extra={"fields": {...}}`` (the Agent SDK's convention)
    into top-level keys, without overriding any."""
    fields = event_dict.get("fields")
    if isinstance(fields, MutableMapping):
        del event_dict["fields"]
        for name, value in fields.items():
            event_dict.setdefault(str(name), value)
    return event_dict


# -- configuration --------------------------------------------------------------------------
def _level_number(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    json: bool = True, level: str | int = "info", *, stream: TextIO | None = None
) -> logging.Handler:
    """Route structlog and standard-library logging to one handler on ``stream``
    (default: stderr) that writes JSON lines (``json=True``) or console lines, at
    ``level`` and above. Calling it again replaces the handler it installed before;
    other handlers of the root logger are left alone. Returns the handler."""
    number = _level_number(level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_correlation_id,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _flatten_fields],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_sensitive,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger over the standard-library logger ``name``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
