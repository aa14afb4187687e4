"""Where the clients find their token: argument, ARAGORA_TOKEN, then the admin token file
that a local ``aragora serve`` wrote, for the default local URL only."""

from __future__ import annotations

from pathlib import Path

import pytest

from aragora.client import (
    ADMIN_TOKEN_FILE,
    DEFAULT_DATA_DIR,
    AsyncControlPlaneClient,
    ControlPlaneClient,
    local_admin_token_file,
    resolve_token,
)
from aragora.server.run import DEFAULT_DATA_DIR as SERVER_DEFAULT_DATA_DIR


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in an empty directory, with no token or data dir in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("ARAGORA_TOKEN", "ARAGORA_URL", "ARAGORA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _write_token(directory: Path, token: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ADMIN_TOKEN_FILE
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def test_the_default_data_dir_is_the_servers() -> None:
    assert DEFAULT_DATA_DIR == SERVER_DEFAULT_DATA_DIR


def test_local_admin_token_is_read_for_the_default_url(in_tmp: Path) -> None:
    assert resolve_token(None, {}) is None
    path = _write_token(in_tmp / DEFAULT_DATA_DIR, "acp_local")
    assert resolve_token(None, {}) == "acp_local"
    assert resolve_token(None, {}, url="http://localhost:8080/") == "acp_local"
    assert local_admin_token_file(None, {}) == Path(DEFAULT_DATA_DIR) / ADMIN_TOKEN_FILE
    assert local_admin_token_file(None, {}).resolve() == path.resolve()  # type: ignore[union-attr]


def test_explicit_tokens_win_over_the_file(in_tmp: Path) -> None:
    _write_token(in_tmp / DEFAULT_DATA_DIR, "acp_local")
    assert resolve_token("given", {"ARAGORA_TOKEN": "env"}) == "given"
    assert resolve_token(None, {"ARAGORA_TOKEN": "env"}) == "env"
    assert resolve_token(None, {"ARAGORA_TOKEN": ""}) == "acp_local"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000",
        "https://127.0.0.1:8080",
        "http://cp.example.com:8080",
        "http://127.0.0.1:8080/prefix",
    ],
)
def test_the_file_is_never_sent_elsewhere(in_tmp: Path, url: str) -> None:
    _write_token(in_tmp / DEFAULT_DATA_DIR, "acp_local")
    assert resolve_token(None, {}, url=url) is None
    assert resolve_token(None, {"ARAGORA_URL": url}) is None


def test_aragora_data_dir_names_the_file(in_tmp: Path) -> None:
    _write_token(in_tmp / DEFAULT_DATA_DIR, "acp_cwd")
    elsewhere = in_tmp / "srv"
    env = {"ARAGORA_DATA_DIR": str(elsewhere)}
    assert resolve_token(None, env) is None
    _write_token(elsewhere, "acp_srv")
    assert resolve_token(None, env) == "acp_srv"


def test_an_empty_file_is_no_token(in_tmp: Path) -> None:
    _write_token(in_tmp / DEFAULT_DATA_DIR, "  ")
    assert resolve_token(None, {}) is None


async def test_clients_remember_the_file_they_read(in_tmp: Path) -> None:
    path = _write_token(in_tmp / DEFAULT_DATA_DIR, "acp_local")
    with ControlPlaneClient() as sync_client:
        assert sync_client.token == "acp_local"
        assert sync_client.token_file is not None
        assert sync_client.token_file.resolve() == path.resolve()
    async with AsyncControlPlaneClient(token="given") as async_client:
        assert (async_client.token, async_client.token_file) == ("given", None)
