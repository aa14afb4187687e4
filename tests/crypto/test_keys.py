"""ARAGORA_ENCRYPTION_KEYS: what it accepts, and errors that name the key id but never
show key material."""

from __future__ import annotations

import base64
import logging
import os

import pytest

from aragora.control_plane import ConfigError
from aragora.crypto import ENV_VAR, PayloadCipher, parse_keys
from tests.crypto.keys import new_key, spec


def test_unset_means_no_encryption() -> None:
    assert PayloadCipher.from_env({}) is None


def test_keys_are_read_in_order_the_first_one_primary() -> None:
    cipher = PayloadCipher.from_env({ENV_VAR: spec("k3", "k2", "k1")})
    assert cipher is not None
    assert cipher.primary_key_id == "k3"
    assert cipher.key_ids == ("k3", "k2", "k1")


def test_whitespace_around_entries_is_ignored() -> None:
    one, two = new_key(), new_key()
    keys = parse_keys(f" a : {one} ,\n b:{two} ")
    assert keys == [("a", base64.b64decode(one)), ("b", base64.b64decode(two))]


def test_url_safe_base64_is_accepted() -> None:
    raw = bytes(range(200, 232))
    encoded = base64.urlsafe_b64encode(raw).decode()
    assert "-" in encoded or "_" in encoded
    assert parse_keys(f"k:{encoded}") == [("k", raw)]


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, spec("env-key"))
    cipher = PayloadCipher.from_env()
    assert cipher is not None and cipher.primary_key_id == "env-key"
    monkeypatch.delenv(ENV_VAR)
    assert PayloadCipher.from_env() is None


SHORT_KEY = base64.b64encode(os.urandom(16)).decode()
LONG_KEY = base64.b64encode(os.urandom(48)).decode()
GOOD_KEY = new_key()


@pytest.mark.parametrize(
    ("value", "message", "secret"),
    [
        pytest.param("", "set but empty", None, id="empty"),
        pytest.param("   ", "set but empty", None, id="blank"),
        pytest.param(f"k1:{GOOD_KEY},,k2:{GOOD_KEY}", "entry 2 is empty", GOOD_KEY, id="gap"),
        pytest.param(f"k1:{GOOD_KEY},", "entry 2 is empty", GOOD_KEY, id="trailing-comma"),
        pytest.param(GOOD_KEY, "entry 1 must look like key_id:base64-key", GOOD_KEY, id="no-id"),
        pytest.param(
            f":{GOOD_KEY}", "entry 1 must look like key_id:base64-key", GOOD_KEY, id="empty-id"
        ),
        pytest.param("k1:", "key 'k1' has no key material", None, id="no-key"),
        pytest.param(
            "k1:not*base64!", "key 'k1' is not valid base64", "not*base64!", id="bad-base64"
        ),
        pytest.param(
            f"k1:{GOOD_KEY[:-2]}", "key 'k1' is not valid base64", GOOD_KEY[:-2], id="bad-padding"
        ),
        pytest.param(
            f"short:{SHORT_KEY}",
            "key 'short' must be 32 bytes (AES-256), got 16",
            SHORT_KEY,
            id="short",
        ),
        pytest.param(
            f"long:{LONG_KEY}",
            "key 'long' must be 32 bytes (AES-256), got 48",
            LONG_KEY,
            id="long",
        ),
        pytest.param(
            f"k1:{GOOD_KEY},k1:{new_key()}",
            "key id 'k1' is listed twice",
            GOOD_KEY,
            id="duplicate",
        ),
        pytest.param(f"bad id:{GOOD_KEY}", "the key id of entry 1 must be", GOOD_KEY, id="bad-id"),
        pytest.param(
            f"{'x' * 65}:{GOOD_KEY}", "the key id of entry 1 must be", GOOD_KEY, id="long-id"
        ),
    ],
)
def test_invalid_key_lists_are_config_errors_without_key_material(
    value: str, message: str, secret: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as info:
        PayloadCipher.from_env({ENV_VAR: value})
    text = str(info.value)
    assert message in text
    assert ENV_VAR in text
    if secret is not None:
        assert secret not in text
        assert secret not in repr(info.value)
        assert secret not in caplog.text
    # no chained decoding error either (it would show in a traceback)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_a_cipher_needs_a_key() -> None:
    with pytest.raises(ConfigError):
        PayloadCipher([])
    with pytest.raises(ConfigError, match="'k'"):
        PayloadCipher([("k", b"short")])
    with pytest.raises(ConfigError, match="key ids must be"):
        PayloadCipher([("a b", bytes(32))])
    with pytest.raises(ConfigError, match="'k' is listed twice"):
        PayloadCipher([("k", bytes(32)), ("k", bytes(32))])
