"""The command line in-process: usage errors, exit codes, loading agents.

Runs against real servers are in ``tests/e2e``.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aragora.agent import Agent
from aragora.cli import ExitCode, UsageProblem, app, exit_code_for, load_agent
from aragora.client import AuthenticationError, ServerError, ServerUnreachableError
from aragora.control_plane import (
    ConfigError,
    InvalidStateError,
    LeaseLostError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
)

runner = CliRunner()


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TaskFailedError("t", ["e"]), ExitCode.TASK_FAILED),
        (TaskCancelledError("t"), ExitCode.TASK_FAILED),
        (ValidationError("f", "r"), ExitCode.USAGE),
        (ConfigError("c"), ExitCode.USAGE),
        (UsageProblem("u"), ExitCode.USAGE),
        (TaskNotFoundError("t"), ExitCode.NOT_FOUND),
        (AuthenticationError(401, "no"), ExitCode.AUTH),
        (ServerUnreachableError("http://x", "refused"), ExitCode.UNREACHABLE),
        (StoreUnavailableError("down"), ExitCode.UNREACHABLE),
        (ServerError(500, "bug"), ExitCode.UNREACHABLE),
        (TimeoutError("slow"), ExitCode.TIMEOUT),
        (LeaseLostError("t"), ExitCode.CONFLICT),
        (InvalidStateError("s"), ExitCode.CONFLICT),
    ],
)
def test_exit_codes(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for line in ("0  success", "4  authentication error", "7  conflict"):
        assert line in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task", "submit", "x", "--payload", "{nope"], "--payload is not valid JSON"),
        (["task", "submit", "x", "--priority", "urgent"], "--priority: unknown priority"),
        (["task", "submit", "x", "--metadata", "[1]"], "--metadata must be a JSON object"),
        (["agent", "run", "no_such_module_here:agent"], "cannot import 'no_such_module_here'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["--url", _closed_url(), *args])
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith(f"error: {message}")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_unknown_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["task", "get", "t1", "--bogus"])
    assert result.exit_code == ExitCode.USAGE


def test_unreachable_server_exits_5_from_every_client_command() -> None:
    url = _closed_url()
    for args in (
        ["health"],
        ["agents", "list"],
        ["agents", "show", "a"],
        ["task", "get", "t"],
        ["task", "list"],
        ["task", "wait", "t", "--timeout", "1"],
        ["task", "cancel", "t"],
        ["task", "retry", "t"],
        ["task", "submit", "echo", "--json"],
    ):
        result = runner.invoke(app, [*args, "--url", url])
        assert result.exit_code == ExitCode.UNREACHABLE, args
        assert result.stderr.startswith(f"error: cannot reach the control plane at {url}")


def test_global_options_apply_to_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARAGORA_URL", "http://127.0.0.1:9")
    url = _closed_url()
    result = runner.invoke(app, ["--url", url, "--json", "task", "get", "t"])
    assert url in result.stderr


def test_serve_rejects_a_bad_store_url() -> None:
    result = runner.invoke(app, ["serve", "--store", "ftp://nowhere"])
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith("error: store_url must start with")


def test_load_agent_from_a_file_a_module_or_a_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    (tmp_path / "my_agents.py").write_text(
        "from aragora.agent import Agent\n"
        "agent = Agent('file-agent', heartbeat_interval_s=1)\n"
        "def build():\n"
        "    return Agent('built', heartbeat_interval_s=1)\n"
        "not_an_agent = 3\n"
    )
    loaded = load_agent(f"{tmp_path / 'my_agents.py'}")
    assert isinstance(loaded, Agent) and loaded.agent_id == "file-agent"

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_agent("my_agents:build").agent_id == "built"
    with pytest.raises(UsageProblem, match=r"is not an aragora\.agent\.Agent"):
        load_agent("my_agents:not_an_agent")
    with pytest.raises(UsageProblem, match="has no attribute 'missing'"):
        load_agent("my_agents:missing")
    with pytest.raises(UsageProblem, match="no file"):
        load_agent(f"{tmp_path / 'absent.py'}:agent")
