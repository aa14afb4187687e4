"""Throw-away AES-256 keys for tests, in the ``ARAGORA_ENCRYPTION_KEYS`` format."""

from __future__ import annotations

import base64
import os


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def spec(*key_ids: str) -> str:
    """A key list with a fresh random key for each id, the first one primary."""
    return ",".join(f"{key_id}:{new_key()}" for key_id in key_ids)
