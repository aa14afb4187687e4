"""Audit events, their canonical encoding and the hash that chains them.

Each workspace has its own chain. An event's ``hash`` is the SHA-256 (lower-case hex) of
the canonical JSON encoding of every other field of the event, ``prev_hash`` included;
``prev_hash`` is the ``hash`` of the event before it, or ``GENESIS_HASH`` for the first
event (``seq`` 1). Editing, removing, inserting or reordering any stored event therefore
changes a hash that a later event (or the chain head) still names.

Canonical JSON: ``json.dumps(fields, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` encoded as UTF-8. Times are integers (epoch
milliseconds on the store clock) so the encoding never depends on float formatting of
the event's own fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aragora.control_plane.errors import ValidationError
from aragora.control_plane.models import validate_workspace_id
from aragora.tenancy.models import Principal

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first event of every chain."""

SYSTEM_PRINCIPAL = "system"
"""The principal of events caused by the control plane itself (reaper, rotation, ...)."""

MAX_PRINCIPAL_LENGTH = 128
MAX_ACTION_LENGTH = 64
MAX_RESOURCE_LENGTH = 512
MAX_CORRELATION_ID_LENGTH = 128
MAX_CLIENT_ADDRESS_LENGTH = 128
MAX_DETAILS_BYTES = 16_384

EVENT_FIELDS = (
    "seq",
    "time_ms",
    "workspace_id",
    "principal",
    "action",
    "resource",
    "outcome",
    "correlation_id",
    "client_address",
    "details",
    "prev_hash",
    "hash",
)
"""Every field of a stored event, in display order."""

HASHED_FIELDS = EVENT_FIELDS[:-1]
"""The fields the hash covers: all but ``hash`` itself."""

BODY_FIELDS = tuple(f for f in HASHED_FIELDS if f not in ("seq", "prev_hash"))
"""The fields known before the event's place in the chain is: what a caller supplies,
plus the workspace and the store time."""


class Outcome(StrEnum):
    """How the audited operation ended."""

    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value`` that hashes are computed over (see module docstring)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """The validated fields a caller supplies for one event, before it joins a chain.

    Build it with ``AuditDraft.create``, which checks every field and normalises
    ``details`` to what a JSON round trip returns (so the appended event equals the one
    read back later).
    """

    workspace_id: str
    principal: str
    action: str
    resource: str
    outcome: Outcome
    correlation_id: str | None = None
    client_address: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workspace_id: str,
        *,
        principal: Principal | str,
        action: str,
        resource: str,
        outcome: Outcome | str,
        correlation_id: str | None = None,
        client_address: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditDraft:
        """Validate the fields of one event; ValidationError names the first bad one."""
        validate_workspace_id(workspace_id)
        who = principal.token_id if isinstance(principal, Principal) else principal
        _check_text("principal", who, MAX_PRINCIPAL_LENGTH, required=True)
        _check_text("action", action, MAX_ACTION_LENGTH, required=True)
        _check_text("resource", resource, MAX_RESOURCE_LENGTH, required=False)
        try:
            result = Outcome(outcome)
        except ValueError:
            allowed = ", ".join(o.value for o in Outcome)
            raise ValidationError("outcome", f"must be one of {allowed}") from None
        if correlation_id is not None:
            _check_text("correlation_id", correlation_id, MAX_CORRELATION_ID_LENGTH, required=True)
        if client_address is not None:
            _check_text("client_address", client_address, MAX_CLIENT_ADDRESS_LENGTH, required=True)
        return cls(
            workspace_id=workspace_id,
            principal=str(who),
            action=str(action),
            resource=str(resource),
            outcome=result,
            correlation_id=None if correlation_id is None else str(correlation_id),
            client_address=None if client_address is None else str(client_address),
            details=_normalise_details(details),
        )


def _check_text(name: str, value: object, max_length: int, *, required: bool) -> None:
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string")
    if required and not value:
        raise ValidationError(name, "must not be empty")
    if len(value) > max_length:
        raise ValidationError(name, f"must be at most {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(name, "must be valid Unicode text") from None


def _normalise_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise ValidationError("details", "must be an object")
    try:
        text = canonical_json(dict(details))
        size_bytes = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise ValidationError("details", f"must be JSON-encodable: {exc}") from None
    if size_bytes > MAX_DETAILS_BYTES:
        raise ValidationError(
            "details", f"is {size_bytes} bytes encoded, over the limit of {MAX_DETAILS_BYTES}"
        )
    normalised: dict[str, Any] = json.loads(text)
    return normalised


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of a workspace's audit trail, as stored.

    ``principal`` is the token id of the caller or ``"system"``; ``resource`` names the
    object acted on (``"task:<id>"``, ``"agent:<id>"``, ...); ``time_ms`` is epoch
    milliseconds on the store clock.
    """

    seq: int
    time_ms: int
    workspace_id: str
    principal: str
    action: str
    resource: str
    outcome: str
    correlation_id: str | None
    client_address: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """Every field, ``hash`` included (the shape of one exported line)."""
        return {name: getattr(self, name) for name in EVENT_FIELDS}

    def body(self) -> dict[str, Any]:
        """The fields that do not depend on the event's place in the chain."""
        return {name: getattr(self, name) for name in BODY_FIELDS}

    def compute_hash(self) -> str:
        """The hash this event's fields call for; differs from ``hash`` once edited."""
        return sha256_hex(canonical_json({name: getattr(self, name) for name in HASHED_FIELDS}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Rebuild an event from ``to_dict`` output; ValueError when a field is missing,
        unknown or of the wrong type (a stored event that was tampered with)."""
        names = set(data)
        if names != set(EVENT_FIELDS):
            missing = sorted(set(EVENT_FIELDS) - names)
            extra = sorted(names - set(EVENT_FIELDS))
            raise ValueError(f"fields do not match: missing {missing}, unexpected {extra}")
        for name in ("seq", "time_ms"):
            if type(data[name]) is not int:
                raise ValueError(f"{name} must be an integer")
        for name in ("workspace_id", "principal", "action", "resource", "outcome"):
            if not isinstance(data[name], str):
                raise ValueError(f"{name} must be a string")
        for name in ("prev_hash", "hash"):
            if not isinstance(data[name], str) or len(data[name]) != 64:
                raise ValueError(f"{name} must be 64 hex digits")
        for name in ("correlation_id", "client_address"):
            if data[name] is not None and not isinstance(data[name], str):
                raise ValueError(f"{name} must be a string or null")
        if not isinstance(data["details"], dict):
            raise ValueError("details must be an object")
        return cls(**{name: data[name] for name in EVENT_FIELDS})


def chain_events(
    drafts: Sequence[AuditDraft], *, head_seq: int, head_hash: str, time_ms: int
) -> list[AuditEvent]:
    """The events that ``drafts`` become when appended after the head (seq, hash)."""
    events: list[AuditEvent] = []
    prev_hash = head_hash
    for offset, draft in enumerate(drafts, start=1):
        fields: dict[str, Any] = {
            "seq": head_seq + offset,
            "time_ms": time_ms,
            "workspace_id": draft.workspace_id,
            "principal": draft.principal,
            "action": draft.action,
            "resource": draft.resource,
            "outcome": draft.outcome.value,
            "correlation_id": draft.correlation_id,
            "client_address": draft.client_address,
            "details": draft.details,
            "prev_hash": prev_hash,
        }
        digest = sha256_hex(canonical_json(fields))
        events.append(AuditEvent(**fields, hash=digest))
        prev_hash = digest
    return events
