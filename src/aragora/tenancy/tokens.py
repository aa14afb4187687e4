"""API token format, generation and keyed hashing.

A token looks like ``acp_<random>_<checksum>``:

* ``acp_`` makes a leaked token recognisable (secret scanners, log filters);
* ``<random>`` is :data:`RANDOM_CHARS` base62 characters from :mod:`secrets`
  (about 178 bits);
* ``<checksum>`` is the CRC32 (:func:`zlib.crc32`) of the random part, in base62,
  padded to 6 characters, so a mistyped or truncated token is rejected by
  :func:`looks_valid` before any store lookup.

The store never sees a token: it keeps ``token_hash(server_secret, token)``, an
HMAC-SHA256 under the server's secret key, so a copy of the store alone does not let
anyone authenticate or test guesses offline. Each token also has a public
``token_id`` (``tok_`` + 12 random base62 characters) chosen independently of the
secret, for listing, revoking and audit records.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from typing import Final

TOKEN_PREFIX: Final = "acp_"
TOKEN_ID_PREFIX: Final = "tok_"
RANDOM_CHARS: Final = 30
"""Length of the random part of generated tokens (at least :data:`MIN_RANDOM_CHARS`)."""
MIN_RANDOM_CHARS: Final = 22
MAX_RANDOM_CHARS: Final = 128
CHECKSUM_CHARS: Final = 6
TOKEN_ID_RANDOM_CHARS: Final = 12

BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase

_TOKEN_RE: Final = re.compile(
    rf"{TOKEN_PREFIX}([0-9A-Za-z]{{{MIN_RANDOM_CHARS},{MAX_RANDOM_CHARS}}})"
    rf"_([0-9A-Za-z]{{{CHECKSUM_CHARS}}})"
)
TOKEN_ID_RE: Final = re.compile(r"tok_[0-9A-Za-z_]{1,64}")
"""Valid token ids (use ``fullmatch``): generated ones and fixed ones such as
``tok_bootstrap``."""


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def _base62(value: int, width: int) -> str:
    digits: list[str] = []
    while value:
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits)).rjust(width, BASE62[0])


def checksum(random_part: str) -> str:
    """The 6-character base62 CRC32 of a token's random part."""
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_CHARS)


def generate_token() -> tuple[str, str]:
    """A new ``(token_id, token)`` pair; the id reveals nothing about the token."""
    random_part = _random_base62(RANDOM_CHARS)
    token = f"{TOKEN_PREFIX}{random_part}_{checksum(random_part)}"
    return generate_token_id(), token


def generate_token_id() -> str:
    """A new public token id: ``tok_`` and 12 random base62 characters."""
    return TOKEN_ID_PREFIX + _random_base62(TOKEN_ID_RANDOM_CHARS)


def has_token_format(token: str) -> bool:
    """True if ``token`` is shaped like ``acp_<random>_<checksum>``, checksum unchecked."""
    return _TOKEN_RE.fullmatch(token) is not None


def looks_valid(token: str) -> bool:
    """True if ``token`` has the ``acp_`` format and its checksum matches.

    Costs no store lookup, so a mistyped token is refused cheaply; says nothing about
    whether the token was ever issued.
    """
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return False
    return hmac.compare_digest(checksum(match.group(1)), match.group(2))


def token_hash(secret_key: bytes, token: str) -> str:
    """HMAC-SHA256 of ``token`` under the server's ``secret_key``, as 64 hex characters.

    This is what the store keeps and indexes. Every instance of a deployment must use
    the same ``secret_key`` (see :func:`aragora.tenancy.keyfiles.load_server_secret`),
    or tokens issued by one instance are unknown to the others.
    """
    return hmac.new(secret_key, token.encode("utf-8"), hashlib.sha256).hexdigest()
