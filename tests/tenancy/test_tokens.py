"""The token format: recognisable, checksummed, random; ids independent of secrets;
keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib

import pytest

from aragora.tenancy.tokens import (
    BASE62,
    MIN_RANDOM_CHARS,
    checksum,
    generate_token,
    generate_token_id,
    has_token_format,
    looks_valid,
    token_hash,
)

TOKEN_RE = re.compile(r"^acp_([0-9A-Za-z]{22,})_([0-9A-Za-z]{6})$")


def _from_base62(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + BASE62.index(char)
    return value


def test_a_generated_token_has_the_documented_format_and_checksum() -> None:
    token_id, token = generate_token()
    match = TOKEN_RE.match(token)
    assert match is not None
    random_part, check = match.groups()
    assert len(random_part) >= MIN_RANDOM_CHARS
    assert _from_base62(check) == zlib.crc32(random_part.encode())
    assert looks_valid(token)
    assert re.fullmatch(r"tok_[0-9A-Za-z]{12}", token_id)


def test_tokens_and_ids_are_random_and_ids_are_not_derived_from_the_secret() -> None:
    pairs = [generate_token() for _ in range(200)]
    assert len({t for _, t in pairs}) == len({i for i, _ in pairs}) == 200
    for token_id, token in pairs:
        assert token_id[4:] not in token
    assert len({generate_token_id() for _ in range(200)}) == 200


def test_every_single_character_change_is_rejected() -> None:
    _, token = generate_token()
    for position in range(len("acp_"), len(token)):
        if token[position] == "_":
            continue
        for replacement in ("0", "Z", "z", "q"):
            if replacement == token[position]:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            assert has_token_format(changed)
            assert not looks_valid(changed), (position, replacement)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],  # a checksum character lost
        lambda t: t + "0",
        lambda t: t.upper(),
        lambda t: "ACP_" + t[4:],
        lambda t: "acx_" + t[4:],
        lambda t: t.replace("_", "-"),
        lambda t: " " + t,
        lambda t: t + "\n",
        lambda t: t[:10] + t[11:],  # a random character lost
        lambda t: t[:10] + "é" + t[11:],
        lambda t: "",
    ],
)
def test_mangled_tokens_are_rejected(mangle: object) -> None:
    _, token = generate_token()
    assert callable(mangle)
    assert not looks_valid(mangle(token))


def test_a_random_part_that_is_too_short_is_rejected_even_with_a_right_checksum() -> None:
    short = "a" * (MIN_RANDOM_CHARS - 1)
    assert not looks_valid(f"acp_{short}_{checksum(short)}")
    enough = "a" * MIN_RANDOM_CHARS
    assert looks_valid(f"acp_{enough}_{checksum(enough)}")


def test_token_hash_is_hmac_sha256_under_the_server_key() -> None:
    _, token = generate_token()
    key = b"k" * 32
    expected = hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
    assert token_hash(key, token) == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)
    assert token_hash(b"j" * 32, token) != expected
    assert token_hash(key, token) == token_hash(key, token)
    assert hashlib.sha256(token.encode()).hexdigest() != expected
