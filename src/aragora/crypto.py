"""Encryption at rest of task payloads and results (AES-256-GCM with key ids).

Configuration: ``ARAGORA_ENCRYPTION_KEYS`` is a comma-separated list of
``key_id:base64-of-32-bytes``. The first key encrypts every new value; every listed key
decrypts. To rotate, put a new key first, keep the old ones listed, run
``rotate_tasks`` (it re-encrypts what the old keys wrote), then drop the old keys.

An encrypted value is stored as the JSON envelope::

    {"$enc": "v1", "kid": "<key id>", "nonce": "<base64, 12 bytes>", "ct": "<base64>"}

``ct`` is the AES-GCM ciphertext and tag of the value's compact JSON encoding, under a
random 96-bit nonce per message. The associated data binds the envelope version, the
key id, the workspace id, the task id and the field name (``payload`` or ``result``),
so a ciphertext copied to another task, field or workspace does not decrypt. Random
nonces keep the chance of a repeat negligible up to about 2**32 messages per key:
rotate well before that.

Key material never appears in ``repr``, ``str``, error messages or logs.

Errors: ``DecryptionError`` (a ``ControlPlaneError``) when an envelope does not decrypt;
``ConfigError`` for a bad key list; ``ValidationError`` for a value that is not JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aragora.control_plane.errors import ConfigError, ControlPlaneError, ValidationError

if TYPE_CHECKING:
    from aragora.control_plane.models import TaskStatus
    from aragora.store.base import TaskPage

logger = logging.getLogger(__name__)

ENV_VAR: Final = "ARAGORA_ENCRYPTION_KEYS"
ENVELOPE_VERSION: Final = "v1"
ENVELOPE_KEYS: Final = frozenset({"$enc", "kid", "nonce", "ct"})
ENCRYPTED_FIELDS: Final = ("payload", "result")
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
MAX_KEY_ID_LENGTH: Final = 64
ROTATION_PAGE_SIZE: Final = 200

_KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_AAD_CONTEXT = "aragora.task-data"


class DecryptionError(ControlPlaneError):
    """An envelope could not be decrypted: unknown key id, malformed, tampered with, or
    bound to another workspace, task or field. Says which, never why in key terms."""


class RotationIncompleteError(DecryptionError):
    """``rotate_tasks`` re-encrypted what it could, but some envelopes did not decrypt.

    ``rotated`` counts the tasks rewritten; ``failed`` lists ``(workspace_id, task_id,
    field)`` of the envelopes left as they were. Keep their keys until they are dealt with.
    """

    def __init__(self, rotated: int, failed: Sequence[tuple[str, str, str]]) -> None:
        shown = ", ".join(f"{ws}/{task}/{fld}" for ws, task, fld in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        super().__init__(
            f"rotated {rotated} task(s) but {len(failed)} envelope(s) did not decrypt:"
            f" {shown}{more}"
        )
        self.rotated = rotated
        self.failed = list(failed)


def is_encrypted(value: object) -> bool:
    """Whether ``value`` has the shape of an encryption envelope (of any version)."""
    return (
        isinstance(value, dict)
        and value.keys() == ENVELOPE_KEYS
        and all(isinstance(v, str) for v in value.values())
    )


def parse_keys(spec: str, *, source: str = ENV_VAR) -> list[tuple[str, bytes]]:
    """``key_id:base64`` entries, comma-separated, to ``(key_id, key)`` pairs in order.

    ConfigError names the entry or key id that is wrong and never shows key material.
    """
    if not spec.strip():
        raise ConfigError(f"{source} is set but empty; unset it to store task data in clear")
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for position, entry in enumerate(spec.split(","), start=1):
        entry = entry.strip()
        if not entry:
            raise ConfigError(f"{source}: entry {position} is empty")
        key_id, colon, material = entry.partition(":")
        key_id = key_id.strip()
        if not colon or not key_id:
            raise ConfigError(f"{source}: entry {position} must look like key_id:base64-key")
        if not _valid_key_id(key_id):
            raise ConfigError(
                f"{source}: the key id of entry {position} must be 1-{MAX_KEY_ID_LENGTH}"
                " letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if key_id in seen:
            raise ConfigError(f"{source}: key id {key_id!r} is listed twice")
        seen.add(key_id)
        keys.append((key_id, _decode_key(key_id, material.strip(), source)))
    return keys


def _valid_key_id(key_id: object) -> bool:
    return (
        isinstance(key_id, str)
        and len(key_id) <= MAX_KEY_ID_LENGTH
        and _KEY_ID_RE.match(key_id) is not None
    )


def _decode_key(key_id: str, material: str, source: str) -> bytes:
    if not material:
        raise ConfigError(f"{source}: key {key_id!r} has no key material")
    try:
        key = base64.b64decode(material.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{source}: key {key_id!r} must be {KEY_BYTES} bytes (AES-256), got {len(key)}"
        )
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _associated_data(kid: str, workspace_id: str, task_id: str, field: str) -> bytes:
    return json.dumps(
        [_AAD_CONTEXT, ENVELOPE_VERSION, kid, workspace_id, task_id, field],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


class PayloadCipher:
    """Encrypts and decrypts task payloads and results with a list of AES-256 keys.

    The first key encrypts; all decrypt. Build it with ``from_env`` or ``from_spec``.
    """

    __slots__ = ("_aeads", "_primary")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigError("a PayloadCipher needs at least one key")
        aeads: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _valid_key_id(key_id):
                raise ConfigError(
                    f"key ids must be 1-{MAX_KEY_ID_LENGTH} letters, digits, '.', '_' or '-'"
                )
            if key_id in aeads:
                raise ConfigError(f"key id {key_id!r} is listed twice")
            if len(key) != KEY_BYTES:
                raise ConfigError(f"key {key_id!r} must be {KEY_BYTES} bytes (AES-256)")
            aeads[key_id] = AESGCM(key)
        self._aeads = aeads
        self._primary = keys[0][0]

    @classmethod
    def from_spec(cls, spec: str, *, source: str = ENV_VAR) -> PayloadCipher:
        """A cipher from ``key_id:base64`` entries (see ``parse_keys``)."""
        return cls(parse_keys(spec, source=source))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PayloadCipher | None:
        """The cipher configured by ``ARAGORA_ENCRYPTION_KEYS``; ``None`` when it is unset
        (task data is then stored in clear). ConfigError when it is set but invalid."""
        env = os.environ if environ is None else environ
        spec = env.get(ENV_VAR)
        if spec is None:
            return None
        return cls.from_spec(spec)

    @property
    def primary_key_id(self) -> str:
        """The id of the key that encrypts new values."""
        return self._primary

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the primary first."""
        return tuple(self._aeads)

    def __repr__(self) -> str:
        return f"PayloadCipher(key_ids={list(self._aeads)!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PayloadCipher holds keys and cannot be pickled or copied")

    is_encrypted = staticmethod(is_encrypted)

    def encrypt(self, value: Any, *, workspace_id: str, task_id: str, field: str) -> dict[str, str]:
        """The envelope of ``value`` (any JSON value) under the primary key, bound to the
        workspace, the task and the field. ValidationError if ``value`` is not JSON."""
        _check_binding(workspace_id, task_id, field)
        try:
            plaintext = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(field, f"must be JSON-encodable: {exc}") from None
        nonce = os.urandom(NONCE_BYTES)
        aad = _associated_data(self._primary, workspace_id, task_id, field)
        ciphertext = self._aeads[self._primary].encrypt(nonce, plaintext.encode("utf-8"), aad)
        return {
            "$enc": ENVELOPE_VERSION,
            "kid": self._primary,
            "nonce": _b64(nonce),
            "ct": _b64(ciphertext),
        }

    def decrypt(self, envelope: Any, *, workspace_id: str, task_id: str, field: str) -> Any:
        """The value sealed in ``envelope``; DecryptionError when the envelope is not one
        of ours, its key is unknown, or it was altered or made for another workspace,
        task or field."""
        _check_binding(workspace_id, task_id, field)
        where = f"{field} of task {task_id!r} in workspace {workspace_id!r}"
        if not is_encrypted(envelope):
            raise DecryptionError(f"the {where} is not an encryption envelope")
        if envelope["$enc"] != ENVELOPE_VERSION:
            version = envelope["$enc"][:16]
            raise DecryptionError(f"the {where} uses unknown envelope version {version!r}")
        kid = envelope["kid"]
        aead = self._aeads.get(kid)
        if aead is None:
            raise DecryptionError(f"the {where} was encrypted with unknown key id {kid!r}")
        try:
            nonce = base64.b64decode(envelope["nonce"], validate=True)
            ciphertext = base64.b64decode(envelope["ct"], validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionError(f"the {where} has a malformed envelope") from None
        if len(nonce) != NONCE_BYTES:
            raise DecryptionError(f"the {where} has a malformed envelope")
        aad = _associated_data(kid, workspace_id, task_id, field)
        try:
            plaintext = aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptionError(
                f"the {where} does not decrypt: altered, or made for another task, field"
                " or workspace"
            ) from None
        try:
            return json.loads(plaintext)
        except ValueError:
            raise DecryptionError(f"the {where} decrypted to something that is not JSON") from None

    def needs_rotation(self, envelope: Mapping[str, Any]) -> bool:
        """Whether ``envelope`` was sealed with a key other than the primary one."""
        return envelope.get("kid") != self._primary

    def decrypt_if_encrypted(
        self, value: Any, *, workspace_id: str, task_id: str, field: str
    ) -> Any:
        """``value`` decrypted when it is an envelope, as it is otherwise (data stored
        before encryption was turned on)."""
        if is_encrypted(value):
            return self.decrypt(value, workspace_id=workspace_id, task_id=task_id, field=field)
        return value


def _check_binding(workspace_id: str, task_id: str, field: str) -> None:
    for name, value in (("workspace_id", workspace_id), ("task_id", task_id), ("field", field)):
        if not isinstance(value, str) or not value:
            raise ValidationError(name, "must be a non-empty string")


def reencrypt(
    cipher: PayloadCipher,
    envelope: Mapping[str, Any],
    *,
    workspace_id: str,
    task_id: str,
    field: str,
) -> dict[str, str]:
    """``envelope`` opened with whichever key sealed it and sealed again under the
    primary key, with a fresh nonce and the same binding. DecryptionError if it does
    not open."""
    value = cipher.decrypt(envelope, workspace_id=workspace_id, task_id=task_id, field=field)
    return cipher.encrypt(value, workspace_id=workspace_id, task_id=task_id, field=field)


class TaskDataRewriter(Protocol):
    """What ``rotate_tasks`` needs from a store.

    Every ``aragora.store.Store`` is one. ``rewrite_task_data`` is one atomic store
    operation (a Lua script on Redis, one transaction on SQLite): for each field given
    as ``(expected, new)``, replace the stored value with ``new`` only if every given
    field still holds its ``expected`` value (compared as decoded JSON); change nothing
    else (status, lease, timestamps, indexes) and never create a task. True when
    written, False when the task is gone or a value changed meanwhile.
    """

    async def list_tasks(
        self,
        workspace_id: str,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage: ...

    async def rewrite_task_data(
        self,
        workspace_id: str,
        task_id: str,
        *,
        payload: tuple[Any, Any] | None = None,
        result: tuple[Any, Any] | None = None,
    ) -> bool: ...


async def rotate_tasks(
    store: TaskDataRewriter,
    cipher: PayloadCipher,
    workspace_ids: Iterable[str],
    *,
    page_size: int = ROTATION_PAGE_SIZE,
) -> int:
    """Re-encrypt under the primary key every payload and result envelope of the given
    workspaces that an older key sealed; return how many tasks were rewritten.

    Clear values and envelopes already under the primary key are left alone, so the
    pass is idempotent and may run while the control plane serves traffic (each rewrite
    is conditional on the value being unchanged). Run it once every instance has the
    new key first. Envelopes that do not decrypt are skipped and reported together at
    the end with RotationIncompleteError.
    """
    rewritten = 0
    failed: list[tuple[str, str, str]] = []
    for workspace_id in workspace_ids:
        cursor: str | None = None
        while True:
            page = await store.list_tasks(workspace_id, limit=page_size, cursor=cursor)
            for task in page.tasks:
                changes: dict[str, tuple[Any, Any]] = {}
                for field in ENCRYPTED_FIELDS:
                    value = getattr(task, field)
                    if not is_encrypted(value) or not cipher.needs_rotation(value):
                        continue
                    try:
                        new = reencrypt(
                            cipher, value, workspace_id=workspace_id, task_id=task.id, field=field
                        )
                    except DecryptionError:
                        logger.warning(
                            "cannot re-encrypt the %s of task %s in workspace %s",
                            field,
                            task.id,
                            workspace_id,
                        )
                        failed.append((workspace_id, task.id, field))
                        continue
                    changes[field] = (value, new)
                if changes and await store.rewrite_task_data(workspace_id, task.id, **changes):
                    rewritten += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    if failed:
        raise RotationIncompleteError(rewritten, failed)
    return rewritten
