"""The command line in-process: usage errors, exit codes, loading agents.

Runs against real servers are in ``tests/e2e``.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aragora import __version__
from aragora.agent import Agent
from aragora.cli import (
    AuditChainBroken,
    ExitCode,
    UsageProblem,
    _budget_rows,
    _cedar_summary,
    _message,
    _workspace_rows,
    app,
    exit_code_for,
    load_agent,
    parse_duration,
)
from aragora.client import (
    AuthenticationError,
    BudgetReport,
    BudgetSettings,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServerUnreachableError,
    WorkspaceInfo,
)
from aragora.control_plane import (
    BudgetExceededError,
    ConfigError,
    InvalidStateError,
    LeaseLostError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.control_plane.models import BudgetPeriod
from aragora.tenancy import (
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
    WorkspaceQuotas,
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
        (WorkspaceExistsError("w"), ExitCode.CONFLICT),
        (WorkspaceNotFoundError("w"), ExitCode.NOT_FOUND),
        (TokenNotFoundError("tok_1"), ExitCode.NOT_FOUND),
        (PermissionDeniedError("role viewer lacks task.submit"), ExitCode.REFUSED),
        (RateLimitedError("used up", 3.0), ExitCode.REFUSED),
        (QuotaExceededError("max_pending_tasks", 10, 10), ExitCode.REFUSED),
        (BudgetExceededError(5.0, 4.0, 2.0), ExitCode.REFUSED),
        (AuditChainBroken("broken"), ExitCode.AUDIT_BROKEN),
    ],
)
def test_exit_codes(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def test_version_prints_without_a_command() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"aragora {__version__}"


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for line in (
        "0  success",
        "4  authentication error",
        "7  conflict",
        "8  refused: forbidden",
        "9  audit chain broken",
    ):
        assert line in result.output
    assert "./.aragora/admin.token" in result.output
    for group in ("workspace", "token", "policy", "audit", "keys"):
        sub = runner.invoke(app, [group, "--help"])
        assert sub.exit_code == 0 and "8  refused" in sub.output, group


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86_400), ("12h", 43_200), ("15m", 900), ("3600s", 3_600), ("90", 90),
     ("1d12h", 129_600), ("1.5h", 5_400), ("2w", 1_209_600), (" 10M ", 600)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "10x", "1h 30m", "-5m", "0s", "h1", "1d-2h"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageProblem, match="--expires-in"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task", "submit", "x", "--payload", "{nope"], "--payload is not valid JSON"),
        (["task", "submit", "x", "--priority", "urgent"], "--priority: unknown priority"),
        (["task", "submit", "x", "--metadata", "[1]"], "--metadata must be a JSON object"),
        (["agent", "run", "no_such_module_here:agent"], "cannot import 'no_such_module_here'"),
        (["token", "create", "--role", "root"], "--role: unknown role 'root'"),
        (["token", "create", "--role", "viewer", "--expires-in", "soon"], "--expires-in: 'soon'"),
        (["workspace", "create", "w", "--max-agents", "many"], "--max-agents: expected"),
        (["workspace", "create", "w", "--budget-period", "daily"], "--budget-period and"),
        (
            ["workspace", "create", "w", "--budget", "5", "--budget-period", "weekly"],
            "--budget-period: expected daily or monthly",
        ),
        (["workspace", "update", "w"], "nothing to change"),
        (["policy", "put", "r", "--file", "/no/such/file.cedar"], "--file: cannot read"),
        (["audit", "verify", "--workspace", "w"], "--workspace applies to --file only"),
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
        ["workspace", "create", "w", "--max-pending-tasks", "unlimited"],
        ["workspace", "list"],
        ["workspace", "show", "w"],
        ["workspace", "update", "w", "--plan", "free"],
        ["token", "create", "--role", "viewer", "--expires-in", "30d"],
        ["token", "list"],
        ["token", "revoke", "tok_1"],
        ["policy", "list"],
        ["policy", "delete", "r"],
        ["budget"],
        ["audit", "verify"],
        ["audit", "export"],
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


def test_tables_of_workspaces_budgets_and_rules() -> None:
    ws = WorkspaceInfo(
        "team",
        "free",
        WorkspaceQuotas(max_agents=2, max_pending_tasks=None),
        BudgetSettings(25.0, BudgetPeriod.DAILY, 0.5),
        created_at=0.0,
    )
    rows = dict(_workspace_rows(ws))
    assert (rows["max agents"], rows["max pending tasks"]) == ("2", "unlimited")
    assert rows["budget"] == "25 daily, alert at 50%"
    assert rows["created"] == "1970-01-01T00:00:00Z"

    report = BudgetReport(
        period="d20250101",
        budget=10.0,
        reserved=2.5,
        spent=5.0,
        by_task_type={"debate": 5.0},
        by_model={},
        limits={"max_agents": None, "max_payload_bytes": 1024, "budget": 10.0,
                "budget_period": "daily", "budget_soft_ratio": 0.8},
    )  # fmt: skip
    budget = dict(_budget_rows(report))
    assert (budget["budget"], budget["used"], budget["by task type"], budget["by model"]) == (
        "10 daily",
        "75%",
        "debate 5",
        "-",
    )
    assert (budget["limit max agents"], budget["limit max payload bytes"]) == ("unlimited", "1024")
    assert "limit budget period" not in budget

    text = "// a comment\nforbid(principal, action, resource)\n  when { true };\n"
    assert _cedar_summary(text) == "forbid(principal, action, resource) when { true };"


def test_authentication_errors_say_where_the_token_came_from() -> None:
    from_file = AuthenticationError(401, "the bearer token is not valid", Path(".aragora/x"))
    assert _message(from_file) == (
        "authentication failed (401): the bearer token is not valid; "
        "the token was read from .aragora/x"
    )
    given = AuthenticationError(401, "the bearer token is not valid")
    assert _message(given).endswith("; check --token / ARAGORA_TOKEN")
    assert _message(PermissionDeniedError("role viewer lacks task.submit")) == (
        "permission denied (403): role viewer lacks task.submit"
    )
