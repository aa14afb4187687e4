"""The server's secret key and the admin token file, on disk with owner-only permissions.

The secret key is what token hashes are keyed with (see
:func:`aragora.tenancy.tokens.token_hash`). Losing or changing it makes every issued
token unknown; anyone holding it together with a copy of the store can test token
guesses offline, so it is kept out of the store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from aragora.control_plane.errors import ConfigError

logger = logging.getLogger(__name__)

SECRET_KEY_ENV: Final = "ARAGORA_SECRET_KEY"
SECRET_KEY_FILE: Final = "secret.key"
SECRET_KEY_BYTES: Final = 32
"""Length of a generated key, and the least a configured one must have."""
FILE_MODE: Final = 0o600
_URLSAFE_TO_STANDARD: Final = str.maketrans("-_", "+/")

StrPath = str | os.PathLike[str]


def load_server_secret(data_dir: StrPath | None, environ: Mapping[str, str] | None = None) -> bytes:
    """The key token hashes are made with.

    ``ARAGORA_SECRET_KEY`` (base64 of at least 32 bytes; an empty value counts as
    unset) wins. Otherwise the key is read from ``<data_dir>/secret.key``, which is
    created on first use with 32 random bytes and mode 0600. Without either, raise
    :class:`ConfigError`.

    A deployment of several instances on Redis must set the same
    ``ARAGORA_SECRET_KEY`` on every instance (or share one data directory): with
    different keys, a token issued through one instance is unknown to the others.
    """
    env = os.environ if environ is None else environ
    configured = env.get(SECRET_KEY_ENV, "").strip()
    if configured:
        return _decode_key(configured)
    if data_dir is None:
        raise ConfigError(
            f"{SECRET_KEY_ENV} is not set and there is no data directory to keep "
            f"{SECRET_KEY_FILE} in: set {SECRET_KEY_ENV} (base64 of at least "
            f"{SECRET_KEY_BYTES} random bytes, the same on every instance)"
        )
    return _read_or_create_key_file(Path(data_dir) / SECRET_KEY_FILE)


def _decode_key(value: str) -> bytes:
    """Standard or URL-safe base64, padding optional."""
    normalized = value.translate(_URLSAFE_TO_STANDARD)
    normalized += "=" * (-len(normalized) % 4)
    try:
        key = base64.b64decode(normalized.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ConfigError(f"{SECRET_KEY_ENV} is not valid base64") from None
    if len(key) < SECRET_KEY_BYTES:
        raise ConfigError(
            f"{SECRET_KEY_ENV} decodes to {len(key)} bytes; at least {SECRET_KEY_BYTES} are needed"
        )
    return key


def _read_or_create_key_file(path: Path) -> bytes:
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_exclusive(path, secrets.token_bytes(SECRET_KEY_BYTES))
            logger.info("created a new server secret key in %s", path)
        except FileExistsError:
            pass  # made by a concurrent start: use that one
        except OSError as exc:
            raise ConfigError(f"cannot create {str(path)!r}: {exc}") from exc
    try:
        key = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc}") from exc
    if len(key) < SECRET_KEY_BYTES:
        raise ConfigError(
            f"{str(path)!r} holds {len(key)} bytes, fewer than {SECRET_KEY_BYTES}; replacing it "
            "makes every issued token invalid"
        )
    if mode & 0o077:
        logger.warning("%s is readable by others (mode %o); it should be 0600", path, mode)
    return key


def _create_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` with mode 0600, or raise FileExistsError.

    The content is written to a private temporary file first and then linked into
    place, so no reader ever sees a partial file. Where hard links are not supported
    the file is created directly with ``O_EXCL``.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _write_all(fd, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system
            _write_o_excl(path, data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_o_excl(path: Path, data: bytes) -> None:
    _write_all(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), data)


def _write_all(fd: int, data: bytes) -> None:
    """Set mode 0600 on ``fd``, write ``data``, flush it to disk and close ``fd``."""
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), FILE_MODE)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def write_token_file(path: StrPath, token: str) -> None:
    """Write ``token`` and a newline to ``path`` with mode 0600, replacing any old file.

    Written to a private temporary file in the same directory and renamed into place,
    so the file is never readable by others and never half written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        _write_all(fd, (token + "\n").encode("utf-8"))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
