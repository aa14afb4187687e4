"""PayloadCipher: round trips, what makes a ciphertext fail, rotation and key hygiene."""

from __future__ import annotations

import base64
import copy
import json
import pickle
from typing import Any

import pytest

from aragora.control_plane import ControlPlaneError, ValidationError
from aragora.crypto import (
    DecryptionError,
    PayloadCipher,
    is_encrypted,
    reencrypt,
)
from tests.crypto.keys import new_key

BIND = {"workspace_id": "ws", "task_id": "task-1", "field": "payload"}


@pytest.fixture
def cipher() -> PayloadCipher:
    return PayloadCipher.from_spec(f"k1:{new_key()}")


def _flip(b64: str, index: int = 0) -> str:
    data = bytearray(base64.b64decode(b64))
    data[index] ^= 0x01
    return base64.b64encode(bytes(data)).decode("ascii")


@pytest.mark.parametrize(
    "value",
    [{"topic": "x", "n": [1, 2.5, None, True]}, "text é", 0, None, [], {"nested": {"a": "b"}}],
)
def test_round_trip(cipher: PayloadCipher, value: Any) -> None:
    envelope = cipher.encrypt(value, **BIND)
    assert envelope.keys() == {"$enc", "kid", "nonce", "ct"}
    assert (envelope["$enc"], envelope["kid"]) == ("v1", "k1")
    assert len(base64.b64decode(envelope["nonce"])) == 12
    assert is_encrypted(envelope) and cipher.is_encrypted(envelope)
    assert json.loads(json.dumps(envelope)) == envelope
    assert cipher.decrypt(envelope, **BIND) == value


def test_the_plaintext_is_not_in_the_envelope(cipher: PayloadCipher) -> None:
    envelope = cipher.encrypt({"secret": "hunter2"}, **BIND)
    assert "hunter2" not in json.dumps(envelope)


def test_every_message_gets_a_fresh_nonce(cipher: PayloadCipher) -> None:
    envelopes = [cipher.encrypt("same", **BIND) for _ in range(50)]
    assert len({e["nonce"] for e in envelopes}) == 50
    assert len({e["ct"] for e in envelopes}) == 50


@pytest.mark.parametrize("part", ["ct", "nonce"])
def test_tampered_ciphertext_or_nonce_fails(cipher: PayloadCipher, part: str) -> None:
    envelope = cipher.encrypt({"a": 1}, **BIND)
    tampered = {**envelope, part: _flip(envelope[part])}
    with pytest.raises(DecryptionError, match="does not decrypt"):
        cipher.decrypt(tampered, **BIND)


def test_a_truncated_ciphertext_fails(cipher: PayloadCipher) -> None:
    envelope = cipher.encrypt({"a": 1}, **BIND)
    short = base64.b64encode(base64.b64decode(envelope["ct"])[:-1]).decode()
    with pytest.raises(DecryptionError):
        cipher.decrypt({**envelope, "ct": short}, **BIND)


def test_a_ciphertext_swapped_between_two_tasks_fails(cipher: PayloadCipher) -> None:
    one = cipher.encrypt({"for": "one"}, workspace_id="ws", task_id="t1", field="payload")
    two = cipher.encrypt({"for": "two"}, workspace_id="ws", task_id="t2", field="payload")
    with pytest.raises(DecryptionError):
        cipher.decrypt(one, workspace_id="ws", task_id="t2", field="payload")
    with pytest.raises(DecryptionError):
        cipher.decrypt(two, workspace_id="ws", task_id="t1", field="payload")


def test_a_ciphertext_moved_to_another_field_fails(cipher: PayloadCipher) -> None:
    envelope = cipher.encrypt({"a": 1}, **BIND)
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope, **{**BIND, "field": "result"})


def test_a_ciphertext_in_another_workspace_fails(cipher: PayloadCipher) -> None:
    envelope = cipher.encrypt({"a": 1}, **BIND)
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(envelope, **{**BIND, "workspace_id": "other"})
    assert isinstance(info.value, ControlPlaneError)


def test_a_key_id_changed_in_the_envelope_fails() -> None:
    key = new_key()
    cipher = PayloadCipher.from_spec(f"a:{key},b:{key}")
    envelope = cipher.encrypt({"a": 1}, **BIND)
    with pytest.raises(DecryptionError):
        cipher.decrypt({**envelope, "kid": "b"}, **BIND)


def test_another_key_does_not_decrypt(cipher: PayloadCipher) -> None:
    envelope = cipher.encrypt({"a": 1}, **BIND)
    stranger = PayloadCipher.from_spec(f"k1:{new_key()}")
    with pytest.raises(DecryptionError):
        stranger.decrypt(envelope, **BIND)


def test_an_unknown_key_id_is_named(cipher: PayloadCipher) -> None:
    envelope = PayloadCipher.from_spec(f"gone:{new_key()}").encrypt(1, **BIND)
    with pytest.raises(DecryptionError, match="unknown key id 'gone'"):
        cipher.decrypt(envelope, **BIND)


@pytest.mark.parametrize(
    "envelope",
    [
        {"a": 1},
        "text",
        None,
        {"$enc": "v9", "kid": "k1", "nonce": "AAAA", "ct": "AAAA"},
        {"$enc": "v1", "kid": "k1", "nonce": "***", "ct": "AAAA"},
        {"$enc": "v1", "kid": "k1", "nonce": "AAAA", "ct": "AAAA"},
    ],
)
def test_malformed_envelopes_fail_clearly(cipher: PayloadCipher, envelope: Any) -> None:
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope, **BIND)


def test_old_keys_still_decrypt_after_a_new_key_is_put_first() -> None:
    old_key = new_key()
    old = PayloadCipher.from_spec(f"2024:{old_key}")
    envelope = old.encrypt({"v": 1}, **BIND)
    rotated = PayloadCipher.from_spec(f"2025:{new_key()},2024:{old_key}")
    assert rotated.primary_key_id == "2025"
    assert rotated.key_ids == ("2025", "2024")
    assert rotated.decrypt(envelope, **BIND) == {"v": 1}
    assert rotated.encrypt({"v": 1}, **BIND)["kid"] == "2025"


def test_needs_rotation_and_reencrypt() -> None:
    old_key = new_key()
    envelope = PayloadCipher.from_spec(f"old:{old_key}").encrypt([1, 2], **BIND)
    rotated = PayloadCipher.from_spec(f"new:{new_key()},old:{old_key}")
    assert rotated.needs_rotation(envelope)
    fresh = reencrypt(rotated, envelope, **BIND)
    assert fresh["kid"] == "new" and fresh["nonce"] != envelope["nonce"]
    assert not rotated.needs_rotation(fresh)
    assert rotated.decrypt(fresh, **BIND) == [1, 2]
    with pytest.raises(DecryptionError):
        rotated.decrypt(fresh, **{**BIND, "task_id": "other"})


def test_decrypt_if_encrypted_passes_clear_values_through(cipher: PayloadCipher) -> None:
    assert cipher.decrypt_if_encrypted({"clear": True}, **BIND) == {"clear": True}
    envelope = cipher.encrypt({"sealed": True}, **BIND)
    assert cipher.decrypt_if_encrypted(envelope, **BIND) == {"sealed": True}


@pytest.mark.parametrize(
    "value",
    [
        {"k1": "AAAA", "ct": "x", "nonce": "y", "$enc": 1},
        {"$enc": "v1", "kid": "k1", "nonce": "x"},
        {"$enc": "v1", "kid": "k1", "nonce": "x", "ct": "y", "extra": "z"},
        ["$enc", "kid", "nonce", "ct"],
    ],
)
def test_is_encrypted_wants_exactly_the_envelope_shape(value: Any) -> None:
    assert not is_encrypted(value)


def test_values_that_are_not_json_are_rejected_before_encrypting(cipher: PayloadCipher) -> None:
    with pytest.raises(ValidationError) as info:
        cipher.encrypt({"x": object()}, **BIND)
    assert info.value.field == "payload"
    with pytest.raises(ValidationError):
        cipher.encrypt(float("nan"), **BIND)


def test_the_binding_must_be_given(cipher: PayloadCipher) -> None:
    with pytest.raises(ValidationError) as info:
        cipher.encrypt(1, workspace_id="ws", task_id="", field="payload")
    assert info.value.field == "task_id"


def test_repr_and_str_show_key_ids_but_never_keys() -> None:
    key = new_key()
    cipher = PayloadCipher.from_spec(f"primary:{key}")
    raw_key = base64.b64decode(key)
    for text in (repr(cipher), str(cipher), f"{cipher}", f"{cipher!r}"):
        assert "primary" in text
        assert key not in text and raw_key.hex() not in text and str(raw_key) not in text
    assert not hasattr(cipher, "__dict__")


def test_a_cipher_cannot_be_pickled_or_copied(cipher: PayloadCipher) -> None:
    with pytest.raises(TypeError, match="holds keys"):
        pickle.dumps(cipher)
    with pytest.raises(TypeError, match="holds keys"):
        copy.copy(cipher)
