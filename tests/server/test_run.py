"""``config_for_serve`` picks the store; ``serve`` runs uvicorn and shuts down gracefully."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aragora.control_plane import ConfigError, ControlPlaneConfig
from aragora.server.run import GRACEFUL_SHUTDOWN_S, config_for_serve

# -- config_for_serve ---------------------------------------------------------------


def test_default_is_sqlite_in_dot_aragora_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_for_serve(None, None, {})
    assert config.store_url == f"sqlite:///{tmp_path.resolve()}/.aragora/state.db"
    assert config.store_url.startswith("sqlite:////")
    assert (tmp_path / ".aragora").is_dir()


def test_data_dir_option_then_environment(tmp_path: Path) -> None:
    given = config_for_serve(
        None, str(tmp_path / "opt"), {"ARAGORA_DATA_DIR": str(tmp_path / "env")}
    )
    assert given.store_url == f"sqlite:///{tmp_path.resolve()}/opt/state.db"
    from_env = config_for_serve(None, None, {"ARAGORA_DATA_DIR": str(tmp_path / "env")})
    assert from_env.store_url == f"sqlite:///{tmp_path.resolve()}/env/state.db"
    assert (tmp_path / "env").is_dir()


def test_store_option_wins(tmp_path: Path) -> None:
    env = {"ARAGORA_STORE_URL": "sqlite:///elsewhere.db", "ARAGORA_REDIS_URL": "redis://r:1/0"}
    config = config_for_serve("redis://cache:6380/2", str(tmp_path), env)
    assert config.effective_store_url == "redis://cache:6380/2"
    assert config_for_serve("sqlite:///x.db", None, env).store_url == "sqlite:///x.db"


def test_environment_store_url_then_redis_url(tmp_path: Path) -> None:
    both = {"ARAGORA_STORE_URL": "sqlite:////var/a.db", "ARAGORA_REDIS_URL": "redis://r:1/0"}
    assert config_for_serve(None, str(tmp_path), both).store_url == "sqlite:////var/a.db"
    redis_only = config_for_serve(None, str(tmp_path), {"ARAGORA_REDIS_URL": "redis://r:1/0"})
    assert redis_only.store_url is None
    assert redis_only.effective_store_url == "redis://r:1/0"
    assert not (tmp_path / "state.db").exists()


def test_other_settings_come_from_the_environment(tmp_path: Path) -> None:
    config = config_for_serve(None, str(tmp_path), {"ARAGORA_TASK_TIMEOUT": "12.5"})
    assert config.task_timeout == 12.5


def test_a_bad_store_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config_for_serve("postgres://db/x", None, {})


# -- serve -----------------------------------------------------------------------------

START_TIMEOUT_S = 30.0
PROMPT_S = GRACEFUL_SHUTDOWN_S  # released long-polls answer well before the grace period ends

TOKEN = "x7-admin-token-for-serve"
SERVE_SCRIPT = """
import sys
from aragora.server import config_for_serve, serve
port, token, data_dir = int(sys.argv[1]), sys.argv[2] or None, sys.argv[3]
serve(
    config_for_serve(None, None), port=port, admin_token=token, log_level="info",
    data_dir=data_dir,
)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _child_env(config: ControlPlaneConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARAGORA_")}
    if config.store_url is not None:
        env["ARAGORA_STORE_URL"] = config.store_url
    else:
        env["ARAGORA_REDIS_URL"] = config.redis_url
        env["ARAGORA_KEY_PREFIX"] = config.key_prefix
    return env


async def _send_raw(port: int, request: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a whole request on a connection of its own; the answer is read later."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    await writer.drain()
    return reader, writer


async def _read_answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[int, bytes]:
    raw = await asyncio.wait_for(reader.read(), PROMPT_S)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _http(method: str, path: str, body: str = "") -> str:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n{body}"
    )


async def _until_long_polls_waiting(http: httpx.AsyncClient, count: int) -> None:
    """Return once the server's metrics show ``count`` long-polls waiting."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            scraped = await http.get("/metrics")
            assert scraped.status_code == 200, scraped.text
            waiting = [
                family.samples[0].value
                for family in text_string_to_metric_families(scraped.text)
                if family.name == "aragora_http_long_polls_waiting"
            ]
            if waiting and waiting[0] >= count:
                return
            await asyncio.sleep(0.02)  # noqa: sleep-ok (a condition polled with a deadline)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_answers_waiting_long_polls_on_shutdown_and_exits(
    config: ControlPlaneConfig, sig: signal.Signals, tmp_path: Path
) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE_SCRIPT, str(port), TOKEN, str(tmp_path / "data"),
        env=_child_env(config), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "server exited early:\n" + "".join(log)
                log.append(line)
                if "Application startup complete" in line:
                    break

        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=auth) as http:
            registered = await http.post(
                "/api/control-plane/agents/register",
                json={"agent_id": "a1", "capabilities": ["gpu"], "model": "m"},
            )
            assert registered.status_code == 201
            submitted = await http.post(
                "/api/control-plane/tasks/submit",
                json={"task_type": "t", "payload": 1, "required_capabilities": ["never"]},
            )
            task_id = submitted.json()["task_id"]

            get = await _send_raw(
                port, _http("GET", f"/api/control-plane/tasks/{task_id}?wait_s=60")
            )
            claim = await _send_raw(
                port,
                _http("POST", "/api/control-plane/tasks/claim", '{"agent_id":"a1","wait_s":60}'),
            )
            # Signal only once the server holds both: a request still unread when the
            # signal comes is on a connection the server closes as idle.
            await _until_long_polls_waiting(http, 2)

        proc.send_signal(sig)
        get_status, get_body = await _read_answer(*get)
        claim_status, _ = await _read_answer(*claim)
        assert get_status == 200
        assert json.loads(get_body)["status"] == "pending"
        assert claim_status == 204

        rest = await asyncio.wait_for(proc.stderr.read(), PROMPT_S + 5)
        log.append(rest.decode())
        await asyncio.wait_for(proc.wait(), 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    expected = 0 if sig is signal.SIGINT else -signal.SIGTERM
    assert proc.returncode == expected, "".join(log)
    text = "".join(log)
    assert "Traceback" not in text and "ERROR" not in text, text
    assert TOKEN not in text


async def test_serve_without_a_token_issues_one_shows_it_once_and_writes_it(
    config: ControlPlaneConfig, tmp_path: Path
) -> None:
    """First start: an admin token is printed once and kept in <data-dir>/admin.token;
    a second start on the same store issues none (the first is still active)."""
    data_dir = tmp_path / "data"
    env = _child_env(config)
    shown: list[str] = []
    for start in range(2):
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVE_SCRIPT, str(port), "", str(data_dir),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while b"Uvicorn running on" not in (raw := await proc.stderr.readline()):
                    assert raw, "server exited early"
                base = f"http://127.0.0.1:{port}"
                if start == 0:
                    line = (await proc.stdout.readline()).decode()
                    assert line.startswith('Admin token for workspace "default" (shown once, ')
                    token = line.rsplit(": ", 1)[1].strip()
                    assert token.startswith("acp_")
                    token_file = data_dir / "admin.token"
                    assert token_file.read_text() == token + "\n"
                    assert token_file.stat().st_mode & 0o777 == 0o600
                    shown.append(token)
                async with httpx.AsyncClient(base_url=base) as http:
                    headers = {"Authorization": f"Bearer {shown[0]}"}
                    response = await http.get("/api/control-plane/tasks", headers=headers)
                    assert response.status_code == 200
                    assert (await http.get("/api/control-plane/tasks")).status_code == 401
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), PROMPT_S + 5)
        assert proc.returncode == 0
        assert shown[0] not in out.decode()  # shown once: never again, not even on start 1
    assert (data_dir / "secret.key").stat().st_mode & 0o777 == 0o600
