"""The server secret key (from the environment or a 0600 file) and the admin token file."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aragora.control_plane.errors import ConfigError
from aragora.tenancy import load_server_secret, write_token_file
from aragora.tenancy.keyfiles import SECRET_KEY_ENV, SECRET_KEY_FILE


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that lets everyone read new files: modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_the_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    key = load_server_secret(data_dir, {})
    path = data_dir / SECRET_KEY_FILE
    assert len(key) == 32
    assert path.read_bytes() == key
    assert _mode(path) == 0o600
    assert load_server_secret(data_dir, {}) == key
    assert load_server_secret(str(data_dir), {}) == key
    assert [p.name for p in data_dir.iterdir()] == [SECRET_KEY_FILE]  # no temporary files


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_server_secret(tmp_path, {}), range(32)))
    assert len(set(keys)) == 1
    assert (tmp_path / SECRET_KEY_FILE).read_bytes() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_KEY_FILE]


def test_two_data_directories_get_different_keys(tmp_path: Path) -> None:
    assert load_server_secret(tmp_path / "a", {}) != load_server_secret(tmp_path / "b", {})


def test_the_environment_wins_and_no_file_is_written(tmp_path: Path) -> None:
    raw = bytes(range(40))
    for encoded in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        " " + base64.b64encode(raw).decode() + "\n",
    ):
        assert load_server_secret(tmp_path, {SECRET_KEY_ENV: encoded}) == raw
        assert load_server_secret(None, {SECRET_KEY_ENV: encoded}) == raw
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    key = load_server_secret(tmp_path, {SECRET_KEY_ENV: ""})
    assert (tmp_path / SECRET_KEY_FILE).read_bytes() == key


@pytest.mark.parametrize(
    "value",
    [base64.b64encode(b"x" * 31).decode(), "not base64 at all!", "ab\u00e9cd", "a"],
)
def test_a_bad_or_short_key_in_the_environment_is_a_config_error(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match=SECRET_KEY_ENV):
        load_server_secret(tmp_path, {SECRET_KEY_ENV: value})


def test_without_environment_or_data_directory_there_is_no_key() -> None:
    with pytest.raises(ConfigError, match=SECRET_KEY_ENV):
        load_server_secret(None, {})


def test_a_truncated_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / SECRET_KEY_FILE
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="fewer than 32"):
        load_server_secret(tmp_path, {})
    assert path.read_bytes() == b"short"


@pytest.mark.usefixtures("permissive_umask")
def test_the_token_file_is_0600_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "data" / "admin.token"
    write_token_file(path, "acp_first")
    assert path.read_text() == "acp_first\n"
    assert _mode(path) == 0o600
    path.chmod(0o644)
    write_token_file(str(path), "acp_second")
    assert path.read_text() == "acp_second\n"
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["admin.token"]
