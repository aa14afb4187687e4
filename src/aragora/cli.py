"""The ``aragora`` command line: run a server or an agent, drive tasks and agents, and
administer workspaces, tokens, access rules, budgets, the audit trail and encryption keys.

Every command that talks to a server takes ``--url`` and ``--token`` (defaults:
ARAGORA_URL, else http://127.0.0.1:8080, and ARAGORA_TOKEN, else the admin token file
of a local server; see ``CREDENTIALS_HELP``); every command takes ``--json`` for
machine-readable output. These options may also be given before the command name.
Errors print one line on stderr and end with an exit status that says what went wrong
(see ``EXIT_CODES_HELP``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import click
import typer
from rich.console import Console
from rich.table import Table

from aragora import __version__
from aragora.audit.verify import VerifyResult, verify_export
from aragora.client import (
    ADMIN_TOKEN_FILE,
    DEFAULT_DATA_DIR,
    AuthenticationError,
    BudgetReport,
    BudgetSettings,
    ControlPlaneClient,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServerHealth,
    ServerUnreachableError,
    WorkspaceInfo,
    token_to_dict,
)
from aragora.control_plane.errors import (
    BudgetExceededError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    NotFoundError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
)
from aragora.control_plane.models import AgentInfo, BudgetPeriod, Task, TaskPriority, TaskStatus
from aragora.control_plane.serialization import agent_to_dict, task_to_dict
from aragora.tenancy.models import PLANS, Role, TokenInfo, WorkspaceQuotas

if TYPE_CHECKING:
    from aragora.control_plane.config import ControlPlaneConfig
    from aragora.crypto import PayloadCipher
    from aragora.policy.models import Rule


class ExitCode(IntEnum):
    """Exit statuses of the ``aragora`` command; scripts may branch on them."""

    OK = 0
    TASK_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    UNREACHABLE = 5
    TIMEOUT = 6
    CONFLICT = 7
    REFUSED = 8
    AUDIT_BROKEN = 9


EXIT_CODES_HELP = """\b
Exit status:
  0  success
  1  the task failed or was cancelled (also: any other error)
  2  usage or validation error (bad option, bad JSON, rejected field)
  3  not found (unknown task, agent, workspace, token or rule)
  4  authentication error (missing, wrong, expired or revoked token)
  5  server unreachable or unavailable (no answer, store down, server error)
  6  timed out waiting
  7  conflict (e.g. retry of a task that has not failed, workspace exists)
  8  refused: forbidden for the token's role or by a workspace rule, rate
     limited, or a workspace quota or budget reached
  9  audit chain broken (audit verify)
"""

CREDENTIALS_HELP = f"""\b
Credentials:
  Requests carry the token of --token, else of ARAGORA_TOKEN. Without either,
  when the URL is the default local one (http://127.0.0.1:8080), the admin
  token that "aragora serve" wrote on its first start is used:
  $ARAGORA_DATA_DIR/{ADMIN_TOKEN_FILE}, else ./{DEFAULT_DATA_DIR}/{ADMIN_TOKEN_FILE}.
  Issue tokens of other roles with "aragora token create".
"""

EPILOG = f"{CREDENTIALS_HELP}\n{EXIT_CODES_HELP}"

P = ParamSpec("P")
R = TypeVar("R")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(
    name="aragora",
    help="Aragora control plane: run the server and agents, submit and follow tasks, "
    "administer workspaces, tokens, access rules, budgets, the audit trail and keys.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _group(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(help=help_text, no_args_is_help=True, epilog=EPILOG)
    app.add_typer(group, name=name)
    return group


agents_app = _group("agents", "Inspect registered agents.")
task_app = _group("task", "Submit, inspect, wait for, cancel and retry tasks.")
agent_app = _group("agent", "Run an agent process.")
workspace_app = _group("workspace", "Create, list, show and update workspaces (admin).")
token_app = _group("token", "Issue, list and revoke API tokens (admin).")
policy_app = _group("policy", "List, put and delete the Cedar access rules of a workspace (admin).")
audit_app = _group(
    "audit", "Verify and export the audit trail, over HTTP or offline on an export (admin)."
)
keys_app = _group("keys", "Manage the encryption keys of task payloads and results.")


# -- shared options ----------------------------------------------------------------
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Server URL [env ARAGORA_URL, default http://127.0.0.1:8080]."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Bearer token [env ARAGORA_TOKEN; for the default local URL, the admin token "
        f"file $ARAGORA_DATA_DIR/{ADMIN_TOKEN_FILE} or ./{DEFAULT_DATA_DIR}/{ADMIN_TOKEN_FILE}].",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]


@dataclass
class _Globals:
    url: str | None = None
    token: str | None = None
    json: bool = False


def _print_version(requested: bool) -> None:
    # Eager, so that it runs before Click asks for a command.
    if requested:
        out.print(f"aragora {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Aragora control plane: run the server and agents, submit and follow tasks."""
    ctx.obj = _Globals(url=url, token=token, json=json_output)


def _settings(
    ctx: typer.Context, url: str | None, token: str | None, json_output: bool
) -> _Globals:
    """Command-level options win over those given before the command name."""
    root = ctx.find_root().obj
    base = root if isinstance(root, _Globals) else _Globals()
    return _Globals(url=url or base.url, token=token or base.token, json=json_output or base.json)


def _client(settings: _Globals) -> ControlPlaneClient:
    return ControlPlaneClient(settings.url, settings.token)


# -- errors ------------------------------------------------------------------------
class UsageProblem(Exception):
    """A mistake in how the command was called; exits with status 2."""


class AuditChainBroken(Exception):
    """``audit verify`` found the chain broken; exits with status 9."""


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status for an error (see ``EXIT_CODES_HELP``)."""
    if isinstance(exc, TaskFailedError | TaskCancelledError):
        return ExitCode.TASK_FAILED
    if isinstance(exc, ValidationError | ConfigError | UsageProblem):
        return ExitCode.USAGE
    if isinstance(exc, NotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, AuthenticationError):
        return ExitCode.AUTH
    if isinstance(
        exc, PermissionDeniedError | RateLimitedError | QuotaExceededError | BudgetExceededError
    ):
        return ExitCode.REFUSED
    if isinstance(exc, AuditChainBroken):
        return ExitCode.AUDIT_BROKEN
    if isinstance(exc, ServerUnreachableError | StoreUnavailableError | ServerError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, TimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(exc, ConflictError):
        return ExitCode.CONFLICT
    return ExitCode.TASK_FAILED


def _fail(message: str, code: ExitCode) -> NoReturn:
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def _message(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError):
        where = (
            f"the token was read from {exc.token_file}"
            if exc.token_file is not None
            else "check --token / ARAGORA_TOKEN"
        )
        return f"authentication failed ({exc.status}): {exc.detail}; {where}"
    if isinstance(exc, PermissionDeniedError):
        return f"permission denied ({exc.status}): {exc.detail}"
    if isinstance(exc, ServerUnreachableError):
        return f"{exc}; is the server running? (--url / ARAGORA_URL)"
    return str(exc) or type(exc).__name__


def _handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a command can meet into one line on stderr and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (ControlPlaneError, TimeoutError, UsageProblem, AuditChainBroken) as exc:
            _fail(_message(exc), exit_code_for(exc))
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.TASK_FAILED)

    return wrapper


# -- output ------------------------------------------------------------------------
def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _kv_table(rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _task_rows(task: Task) -> list[tuple[str, str]]:
    rows = [
        ("id", task.id),
        ("type", task.task_type),
        ("status", task.status.value),
        ("priority", task.priority.value),
        ("capabilities", ", ".join(task.required_capabilities) or "-"),
        ("attempt", f"{task.attempt} (retries allowed: {task.max_retries})"),
        ("agent", task.agent_id or "-"),
        ("created", _when(task.created_at)),
        ("started", _when(task.started_at)),
        ("finished", _when(task.finished_at)),
        ("timeout", f"{task.timeout_s:g}s"),
        ("payload", _compact(task.payload)),
    ]
    if task.idempotency_key:
        rows.append(("idempotency key", task.idempotency_key))
    if task.metadata:
        rows.append(("metadata", _compact(task.metadata)))
    if task.status is TaskStatus.COMPLETED:
        rows.append(("result", _compact(task.result)))
    if task.cost is not None:
        rows.append(("cost", f"{task.cost:g}"))
    for e in task.errors:
        rows.append(
            (f"error #{e.attempt}", f"{e.error} (agent {e.agent_id or '-'}, {_when(e.at)})")
        )
    return rows


def _show_task(task: Task, settings: _Globals) -> None:
    if settings.json:
        _print_json(task_to_dict(task))
    else:
        out.print(_kv_table(_task_rows(task)))


def _agent_rows(agent: AgentInfo) -> list[tuple[str, str]]:
    return [
        ("id", agent.agent_id),
        ("status", agent.status.value),
        ("capabilities", ", ".join(agent.capabilities) or "-"),
        ("model", agent.model),
        ("running", f"{len(agent.running_task_ids)}/{agent.max_concurrent_tasks}"),
        ("tasks", ", ".join(agent.running_task_ids) or "-"),
        ("registered", _when(agent.registered_at)),
        ("last heartbeat", _when(agent.last_heartbeat_at)),
        ("metadata", _compact(agent.metadata)),
    ]


def _parse_json_option(raw: str, option: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"{option} is not valid JSON: {exc}") from None


def _finish_waited(task: Task, settings: _Globals) -> None:
    """Print a terminal task and exit 1 unless it completed."""
    if settings.json:
        _print_json(task_to_dict(task))
    elif task.status is TaskStatus.COMPLETED:
        _print_json(task.result)
    if task.status is TaskStatus.CANCELLED:
        _fail(str(TaskCancelledError(task.id)), ExitCode.TASK_FAILED)
    if task.status is TaskStatus.FAILED:
        _fail(str(TaskFailedError(task.id, [e.error for e in task.errors])), ExitCode.TASK_FAILED)


# -- serve and agents ----------------------------------------------------------------
@app.command()
@_handles_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    store: Annotated[
        str | None,
        typer.Option(
            help="Store URL: sqlite:///PATH, redis://HOST:PORT/DB or "
            "redis+cluster://HOST:PORT[,HOST:PORT...] [default: an SQLite file in --data-dir]."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Directory of the embedded store, the secret key and admin.token "
            f"[env ARAGORA_DATA_DIR, default ./{DEFAULT_DATA_DIR}].",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the HTTP server; every request needs a bearer token.

    With ARAGORA_ADMIN_TOKEN set, that value is the admin token of workspace "default".
    Otherwise the first start issues an admin token, prints it once and writes it to
    <data-dir>/admin.token (mode 0600), where the CLI on this machine finds it. Other
    settings come from ARAGORA_<FIELD> variables (e.g. ARAGORA_TASK_TIMEOUT).
    """
    from aragora.server.run import config_for_serve
    from aragora.server.run import serve as run_server

    directory = None if data_dir is None else str(data_dir)
    config = config_for_serve(store, directory, os.environ)
    run_server(
        config,
        host=host,
        port=port,
        admin_token=os.environ.get("ARAGORA_ADMIN_TOKEN") or None,
        log_level=log_level,
        data_dir=directory,
    )


@app.command()
@_handles_errors
def demo(
    duration_s: Annotated[
        float | None,
        typer.Option("--duration-s", help="Stop by itself after this many seconds."),
    ] = None,
    rate: Annotated[float, typer.Option(help="Tasks submitted per second.")] = 2.0,
    host: Annotated[str, typer.Option(help="Interface the server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Server port [default: a free one].")] = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Keep the store and logs here [default: a temp dir]."),
    ] = None,
    live: Annotated[
        bool,
        typer.Option("--live/--no-live", help="Live view in a terminal, or plain log lines."),
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Make the task mix repeatable.")] = None,
    sign_in_role: Annotated[
        str, typer.Option(help="Role of the printed sign-in token: viewer, operator or admin.")
    ] = "viewer",
    examples_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of the example agents [default: examples/ of the checkout]."),
    ] = None,
) -> None:
    """Start a server, three example agents (one flaky) and a stream of tasks; watch.

    Prints the dashboard URL and a sign-in token, then a live view of tasks, agents and
    circuit breakers. Ctrl-C (or SIGTERM) stops everything: agents drain, then the server.
    """
    from aragora.demo import DEFAULT_EXAMPLES_DIR, DemoSettings, run_demo

    settings = DemoSettings(
        host=host,
        port=port,
        data_dir=data_dir,
        duration_s=duration_s,
        rate_per_s=rate,
        live=live,
        seed=seed,
        sign_in_role=sign_in_role,
        examples_dir=examples_dir or DEFAULT_EXAMPLES_DIR,
    )
    raise typer.Exit(run_demo(settings, out))


def load_agent(target: str) -> Any:
    """Import the Agent named by ``module:attr``, ``path/to/file.py[:attr]`` or ``module``.

    ``attr`` defaults to ``agent``; it may also name a function that returns the agent.
    The current directory is importable, as with ``python -m``.
    """
    from aragora.agent import Agent

    module_name, _, attr = target.partition(":")
    attr = attr or "agent"
    if not module_name:
        raise UsageProblem(f"cannot load agent {target!r}: expected module:attr")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise UsageProblem(f"cannot load agent {target!r}: no file {module_name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageProblem(f"cannot import {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageProblem(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Agent) and callable(obj):
        obj = obj()
    if not isinstance(obj, Agent):
        raise UsageProblem(f"{target!r} is not an aragora.agent.Agent")
    return obj


class _JsonLogFormatter(logging.Formatter):
    """One JSON object per log line, with the structured fields of the agent's events."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        fields = getattr(record, "fields", None)
        if isinstance(event, str):
            line["event"] = event
            if isinstance(fields, dict):
                line.update(fields)
        else:
            line["message"] = record.getMessage()
        return json.dumps(line, default=str)


def _configure_logging(level: str, json_lines: bool) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageProblem(f"unknown log level {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    if numeric > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


@agent_app.command("run")
@_handles_errors
def agent_run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="The agent to run, as module:attr.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Log one JSON object per line.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Import an Agent (e.g. ``examples.echo_agent:agent``) and run it until SIGINT/SIGTERM,
    then drain its in-flight tasks and deregister."""
    settings = _settings(ctx, url, token, json_output)
    _configure_logging(log_level, settings.json)
    agent = load_agent(target)
    if settings.url:
        agent.url = settings.url
    if settings.token:
        agent.token = settings.token
    asyncio.run(agent.run_async(handle_signals=True))


@agents_app.command("list")
@_handles_errors
def agents_list(
    ctx: typer.Context,
    capability: Annotated[
        str | None, typer.Option(help="Only agents with this capability.")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="Only agents in this status (idle, busy, ...).")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the registered agents."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        agents = cp.list_agents(capability, status)
    if settings.json:
        _print_json({"agents": [agent_to_dict(a) for a in agents]})
        return
    table = Table("AGENT", "STATUS", "CAPABILITIES", "MODEL", "RUNNING", "LAST HEARTBEAT")
    for a in agents:
        table.add_row(
            a.agent_id,
            a.status.value,
            ", ".join(a.capabilities),
            a.model,
            f"{len(a.running_task_ids)}/{a.max_concurrent_tasks}",
            _when(a.last_heartbeat_at),
        )
    out.print(table)


@agents_app.command("show")
@_handles_errors
def agents_show(
    ctx: typer.Context,
    agent_id: Annotated[str, typer.Argument(help="The agent's id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one agent."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        agent = cp.get_agent(agent_id)
    if settings.json:
        _print_json(agent_to_dict(agent))
    else:
        out.print(_kv_table(_agent_rows(agent)))


# -- tasks -------------------------------------------------------------------------
@task_app.command("submit")
@_handles_errors
def task_submit(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Argument(help="The task type, e.g. debate.")],
    payload: Annotated[str, typer.Option(help="The payload as JSON.")] = "{}",
    priority: Annotated[
        str, typer.Option(help="critical, high, normal or low.")
    ] = TaskPriority.NORMAL.value,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="A required capability (repeatable)."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting again with this key returns the same task.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds one attempt may run.")
    ] = None,
    max_retries: Annotated[
        int | None, typer.Option(help="Retries after the first attempt.")
    ] = None,
    metadata: Annotated[str | None, typer.Option(help="Metadata as a JSON object.")] = None,
    cost_estimate: Annotated[
        float | None,
        typer.Option(help="Expected cost, reserved against the workspace budget."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the task to finish; print its result.")
    ] = False,
    timeout_wait: Annotated[
        float | None,
        typer.Option("--timeout-wait", help="With --wait: give up after this many seconds."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Submit a task and print its id; with --wait, print its result once it finished
    (exit 1 if it failed or was cancelled, 6 if --timeout-wait passed first)."""
    settings = _settings(ctx, url, token, json_output)
    body = _parse_json_option(payload, "--payload")
    meta = None if metadata is None else _parse_json_option(metadata, "--metadata")
    if meta is not None and not isinstance(meta, dict):
        raise UsageProblem("--metadata must be a JSON object")
    prio = TaskPriority.parse(priority, "--priority")
    with _client(settings) as cp:
        task_id = cp.submit_task(
            task_type,
            body,
            capability or (),
            prio,
            idempotency_key=idempotency_key,
            timeout_s=timeout,
            max_retries=max_retries,
            metadata=meta,
            cost_estimate=cost_estimate,
        )
        if not wait:
            if settings.json:
                _print_json({"task_id": task_id})
            else:
                out.print(task_id, markup=False, highlight=False)
            return
        task = cp.wait_for_task(task_id, timeout_wait)
    _finish_waited(task, settings)


@task_app.command("get")
@_handles_errors
def task_get(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one task."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        task = cp.get_task(task_id)
    _show_task(task, settings)


@task_app.command("wait")
@_handles_errors
def task_wait(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Give up after this many seconds [default: no limit]."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Wait for a task to finish and print its result (exit 1 if it failed or was
    cancelled, 6 on timeout)."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        task = cp.wait_for_task(task_id, timeout)
    _finish_waited(task, settings)


@task_app.command("list")
@_handles_errors
def task_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending, running, completed, failed or cancelled.")
    ] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only this task type.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many tasks.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after a previous page (next_cursor).")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """List tasks, newest first."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        page = cp.list_tasks(status, task_type=task_type, limit=limit, cursor=cursor)
    if settings.json:
        _print_json(
            {"tasks": [task_to_dict(t) for t in page.tasks], "next_cursor": page.next_cursor}
        )
        return
    table = Table("TASK", "TYPE", "STATUS", "PRIORITY", "ATTEMPT", "AGENT", "CREATED")
    for t in page.tasks:
        table.add_row(
            t.id,
            t.task_type,
            t.status.value,
            t.priority.value,
            str(t.attempt),
            t.agent_id or "-",
            _when(t.created_at),
        )
    out.print(table)
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}", markup=False, highlight=False)


@task_app.command("cancel")
@_handles_errors
def task_cancel(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Cancel a pending or running task (exit 7 if it already finished)."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        task = cp.cancel_task(task_id)
    _show_task(task, settings)


@task_app.command("retry")
@_handles_errors
def task_retry(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Queue a failed task again with a fresh allowance of retries (exit 7 if not failed)."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        task = cp.retry_task(task_id)
    _show_task(task, settings)


@app.command()
@_handles_errors
def health(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the server's health; exit 5 when it reports fail."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        report = cp.health()
    if settings.json:
        _print_json(report.raw)
    else:
        out.print(f"status: {report.status}", markup=False, highlight=False)
        table = _health_table(report)
        if table is not None:
            out.print(table)
    if not report.ok:
        raise typer.Exit(ExitCode.UNREACHABLE)


def _health_table(report: ServerHealth) -> Table | None:
    """The checks as rows: health+json keeps them as {name: [check, ...]}."""
    checks = report.checks
    items: list[tuple[str, dict[str, Any]]] = []
    if isinstance(checks, dict):
        for name, entries in checks.items():
            for entry in entries if isinstance(entries, list) else [entries]:
                if isinstance(entry, dict):
                    items.append((str(name), entry))
    elif isinstance(checks, list):
        items = [(str(c.get("component", "?")), c) for c in checks if isinstance(c, dict)]
    if not items:
        return None
    table = Table("CHECK", "STATUS", "VALUE", "OUTPUT")
    for name, entry in items:
        value = entry.get("observedValue", entry.get("observed_value"))
        unit = entry.get("observedUnit", entry.get("observed_unit")) or ""
        if value is None:
            shown = "-"
        elif isinstance(value, float | int) and not isinstance(value, bool):
            shown = f"{value:.3g} {unit}".strip()
        else:
            shown = f"{value} {unit}".strip()
        table.add_row(name, str(entry.get("status", "?")), shown, str(entry.get("output") or ""))
    return table


# -- durations and limits -------------------------------------------------------------
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_duration(text: str, option: str = "--expires-in") -> float:
    """Seconds in a duration such as ``30d``, ``12h``, ``15m``, ``3600s`` or ``1d12h``
    (units s, m, h, d, w; a bare number is seconds). Must be more than 0."""
    raw = text.strip().lower()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", raw):
        total = float(raw)
    else:
        total, position = 0.0, 0
        for part in _DURATION_PART.finditer(raw):
            if part.start() != position:
                break
            total += float(part.group(1)) * _UNIT_S[part.group(2)]
            position = part.end()
        if not raw or position != len(raw):
            raise UsageProblem(
                f"{option}: {text!r} is not a duration; use e.g. 30d, 12h, 15m or 3600s"
            )
    if not total > 0:
        raise UsageProblem(f"{option}: the duration must be more than 0")
    return total


def _quota_value(raw: str, option: str) -> int | None:
    """A quota limit: a whole number of 0 or more, or ``unlimited`` (sent as null)."""
    value = raw.strip().lower()
    if value in ("unlimited", "none"):
        return None
    if not re.fullmatch(r"[0-9]+", value):
        raise UsageProblem(f"{option}: expected a whole number or 'unlimited', got {raw!r}")
    return int(value)


_QUOTA_FIELDS = tuple(WorkspaceQuotas.__dataclass_fields__)


def _option_name(quota: str) -> str:
    return "--" + quota.replace("_", "-")


_QUOTA_METAVAR = "N|unlimited"
MaxAgentsOption = Annotated[
    str | None, typer.Option(metavar=_QUOTA_METAVAR, help="Most agents registered at once.")
]
MaxPendingOption = Annotated[
    str | None, typer.Option(metavar=_QUOTA_METAVAR, help="Most tasks waiting to run.")
]
MaxRunningOption = Annotated[
    str | None, typer.Option(metavar=_QUOTA_METAVAR, help="Most tasks running at once.")
]
MaxPayloadOption = Annotated[
    str | None, typer.Option(metavar=_QUOTA_METAVAR, help="Largest payload in bytes.")
]
MaxSubmitsOption = Annotated[
    str | None, typer.Option(metavar=_QUOTA_METAVAR, help="Most task submissions per minute.")
]
PlanOption = Annotated[
    str | None, typer.Option("--plan", help=f"The plan: {', '.join(PLANS)} [default: standard].")
]
BudgetOption = Annotated[
    float | None,
    typer.Option("--budget", help="Budget: the most spent plus reserved cost per period."),
]
BudgetPeriodOption = Annotated[
    str | None,
    typer.Option("--budget-period", help="daily or monthly (UTC) [default: monthly]."),
]
BudgetSoftRatioOption = Annotated[
    float | None,
    typer.Option("--budget-soft-ratio", help="Share of the budget that raises an alert (0-1)."),
]


def _quota_changes(**values: str | None) -> dict[str, int | None] | None:
    """The quota options that were given, parsed; keyword names are quota fields."""
    changes = {
        quota: _quota_value(raw, _option_name(quota))
        for quota, raw in values.items()
        if raw is not None
    }
    return changes or None


def _budget_settings(
    budget: float | None, period: str | None, soft_ratio: float | None
) -> BudgetSettings | None:
    if budget is None:
        if period is not None or soft_ratio is not None:
            raise UsageProblem("--budget-period and --budget-soft-ratio need --budget")
        return None
    try:
        checked_period = BudgetPeriod((period or BudgetPeriod.MONTHLY.value).lower())
    except ValueError:
        raise UsageProblem(f"--budget-period: expected daily or monthly, got {period!r}") from None
    return BudgetSettings(limit=budget, period=checked_period, soft_ratio=soft_ratio)


# -- workspaces --------------------------------------------------------------------
def _limit_text(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _workspace_rows(ws: WorkspaceInfo) -> list[tuple[str, str]]:
    rows = [("name", ws.name), ("plan", ws.plan), ("created", _when(ws.created_at))]
    rows += [
        (quota.replace("_", " "), _limit_text(getattr(ws.quotas, quota))) for quota in _QUOTA_FIELDS
    ]
    if ws.budget is None:
        rows.append(("budget", "-"))
    else:
        alert = "" if ws.budget.soft_ratio is None else f", alert at {ws.budget.soft_ratio:.0%}"
        rows.append(("budget", f"{ws.budget.limit:g} {ws.budget.period.value}{alert}"))
    return rows


def _show_workspace(ws: WorkspaceInfo, settings: _Globals) -> None:
    if settings.json:
        _print_json(ws.raw)
    else:
        out.print(_kv_table(_workspace_rows(ws)))


@workspace_app.command("create")
@_handles_errors
def workspace_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The workspace's name (also its id).")],
    plan: PlanOption = None,
    max_agents: MaxAgentsOption = None,
    max_pending_tasks: MaxPendingOption = None,
    max_running_tasks: MaxRunningOption = None,
    max_payload_bytes: MaxPayloadOption = None,
    max_submits_per_minute: MaxSubmitsOption = None,
    budget: BudgetOption = None,
    budget_period: BudgetPeriodOption = None,
    budget_soft_ratio: BudgetSoftRatioOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a workspace; the --max-* options override the plan's quotas (exit 7 if the
    name is taken)."""
    settings = _settings(ctx, url, token, json_output)
    quotas = _quota_changes(
        max_agents=max_agents,
        max_pending_tasks=max_pending_tasks,
        max_running_tasks=max_running_tasks,
        max_payload_bytes=max_payload_bytes,
        max_submits_per_minute=max_submits_per_minute,
    )
    budget_settings = _budget_settings(budget, budget_period, budget_soft_ratio)
    with _client(settings) as cp:
        ws = cp.create_workspace(name, plan=plan, quotas=quotas, budget=budget_settings)
    _show_workspace(ws, settings)


@workspace_app.command("update")
@_handles_errors
def workspace_update(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The workspace's name.")],
    plan: PlanOption = None,
    max_agents: MaxAgentsOption = None,
    max_pending_tasks: MaxPendingOption = None,
    max_running_tasks: MaxRunningOption = None,
    max_payload_bytes: MaxPayloadOption = None,
    max_submits_per_minute: MaxSubmitsOption = None,
    budget: BudgetOption = None,
    budget_period: BudgetPeriodOption = None,
    budget_soft_ratio: BudgetSoftRatioOption = None,
    no_budget: Annotated[
        bool, typer.Option("--no-budget", help="Remove the workspace's budget.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Change a workspace's plan, quotas or budget; what is not given stays as it is.
    Quota options merge into earlier overrides."""
    settings = _settings(ctx, url, token, json_output)
    quotas = _quota_changes(
        max_agents=max_agents,
        max_pending_tasks=max_pending_tasks,
        max_running_tasks=max_running_tasks,
        max_payload_bytes=max_payload_bytes,
        max_submits_per_minute=max_submits_per_minute,
    )
    budget_settings = _budget_settings(budget, budget_period, budget_soft_ratio)
    if no_budget and budget_settings is not None:
        raise UsageProblem("--no-budget and --budget exclude each other")
    if plan is None and quotas is None and budget_settings is None and not no_budget:
        raise UsageProblem(
            "nothing to change: give --plan, a --max-* option, --budget or --no-budget"
        )
    with _client(settings) as cp:
        ws = cp.update_workspace(
            name, plan=plan, quotas=quotas, budget=budget_settings, remove_budget=no_budget
        )
    _show_workspace(ws, settings)


@workspace_app.command("list")
@_handles_errors
def workspace_list(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the workspaces."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        workspaces = cp.list_workspaces()
    if settings.json:
        _print_json({"workspaces": [ws.raw for ws in workspaces]})
        return
    table = Table("WORKSPACE", "PLAN", "AGENTS", "PENDING", "RUNNING", "SUBMITS/MIN", "BUDGET")
    for ws in workspaces:
        table.add_row(
            ws.name,
            ws.plan,
            _limit_text(ws.quotas.max_agents),
            _limit_text(ws.quotas.max_pending_tasks),
            _limit_text(ws.quotas.max_running_tasks),
            _limit_text(ws.quotas.max_submits_per_minute),
            "-" if ws.budget is None else f"{ws.budget.limit:g} {ws.budget.period.value}",
        )
    out.print(table)


@workspace_app.command("show")
@_handles_errors
def workspace_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The workspace's name.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one workspace with its effective quotas and budget."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        ws = cp.get_workspace(name)
    _show_workspace(ws, settings)


# -- tokens ------------------------------------------------------------------------
ROLES_TEXT = ", ".join(r.value for r in Role)


@token_app.command("create")
@_handles_errors
def token_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help=f"The token's role: {ROLES_TEXT}.")],
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", help="Its workspace [default: the caller's]."),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in", help="Lifetime such as 30d, 12h, 15m or 3600s [default: never]."
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Issue a token and print it: this is the only time it is shown, store it now.

    Without --json, stdout holds the token alone (for TOKEN=$(aragora token create ...));
    its id and details go to stderr.
    """
    settings = _settings(ctx, url, token, json_output)
    try:
        checked_role = Role(role.lower())
    except ValueError:
        raise UsageProblem(f"--role: unknown role {role!r}; expected one of {ROLES_TEXT}") from None
    expires_in_s = None if expires_in is None else parse_duration(expires_in)
    with _client(settings) as cp:
        info, secret = cp.create_token(checked_role, workspace=workspace, expires_in_s=expires_in_s)
    if settings.json:
        _print_json(
            {
                "token_id": info.token_id,
                "token": secret,
                "workspace": info.workspace_id,
                "role": info.role.value,
                "expires_at": info.expires_at,
            }
        )
    else:
        sys.stdout.write(secret + "\n")
        sys.stdout.flush()
        err.print(
            f"created token {info.token_id}: role {info.role.value} in workspace "
            f"{info.workspace_id}, expires {_expires(info)}",
            markup=False,
        )
    err.print(
        "warning: the token is shown only this once and cannot be recovered; store it now "
        "in a secret store",
        markup=False,
    )


def _expires(info: TokenInfo) -> str:
    return "never" if info.expires_at is None else _when(info.expires_at)


def _token_row(info: TokenInfo) -> list[str]:
    return [
        info.token_id,
        info.workspace_id,
        info.role.value,
        _when(info.created_at),
        _expires(info),
        _when(info.revoked_at),
        info.created_by or "-",
    ]


@token_app.command("list")
@_handles_errors
def token_list(
    ctx: typer.Context,
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Its workspace [default: the caller's].")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the tokens of a workspace (never their secrets), revoked ones included."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        tokens = cp.list_tokens(workspace)
    if settings.json:
        _print_json({"tokens": [token_to_dict(t) for t in tokens]})
        return
    table = Table("TOKEN", "WORKSPACE", "ROLE", "CREATED", "EXPIRES", "REVOKED", "CREATED BY")
    for info in tokens:
        table.add_row(*_token_row(info))
    out.print(table)


@token_app.command("revoke")
@_handles_errors
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_...), not its secret.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Revoke a token; every server refuses it from the next request on."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        cp.revoke_token(token_id)
    if settings.json:
        _print_json({"token_id": token_id, "revoked": True})
    else:
        out.print(f"revoked {token_id}", markup=False, highlight=False)


# -- access rules ----------------------------------------------------------------
def _rule_dict(rule: Rule) -> dict[str, Any]:
    return {
        "rule_id": rule.rule_id,
        "text": rule.text,
        "description": rule.description,
        "updated_at": rule.updated_at,
    }


@policy_app.command("list")
@_handles_errors
def policy_list(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the access rules of the caller's workspace."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        policies = cp.list_policies()
    if settings.json:
        _print_json({"version": policies.version, "rules": [_rule_dict(r) for r in policies.rules]})
        return
    out.print(f"version {policies.version}", markup=False, highlight=False)
    table = Table("RULE", "DESCRIPTION", "UPDATED", "TEXT")
    for rule in policies.rules:
        table.add_row(
            rule.rule_id,
            rule.description or "-",
            _when(rule.updated_at or None),
            _cedar_summary(rule.text),
        )
    out.print(table)


@policy_app.command("put")
@_handles_errors
def policy_put(
    ctx: typer.Context,
    rule_id: Annotated[str, typer.Argument(help="The rule's id.")],
    file: Annotated[
        Path, typer.Option("--file", help="The Cedar text of the rule ('-' reads stdin).")
    ],
    description: Annotated[
        str | None, typer.Option("--description", help="What the rule is for.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create or replace a rule from a .cedar file (exit 2 if the text does not validate)."""
    settings = _settings(ctx, url, token, json_output)
    text = _read_text(file, "--file")
    with _client(settings) as cp:
        rule = cp.put_policy(rule_id, text, description=description)
    if settings.json:
        _print_json(_rule_dict(rule))
    else:
        out.print(
            _kv_table(
                [
                    ("rule", rule.rule_id),
                    ("description", rule.description or "-"),
                    ("updated", _when(rule.updated_at or None)),
                    ("text", rule.text.strip()),
                ]
            )
        )


@policy_app.command("delete")
@_handles_errors
def policy_delete(
    ctx: typer.Context,
    rule_id: Annotated[str, typer.Argument(help="The rule's id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a rule (exit 3 if there is none with this id)."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        cp.delete_policy(rule_id)
    if settings.json:
        _print_json({"rule_id": rule_id, "deleted": True})
    else:
        out.print(f"deleted {rule_id}", markup=False, highlight=False)


def _cedar_summary(text: str) -> str:
    """The statements of a rule on one line, without its comment lines."""
    code = (line.strip() for line in text.splitlines())
    return " ".join(" ".join(line for line in code if line and not line.startswith("//")).split())


def _read_text(path: Path, option: str) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"{option}: cannot read {str(path)!r}: {exc}") from None


# -- budget ------------------------------------------------------------------------
def _amounts_text(amounts: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in sorted(amounts.items())) or "-"


def _budget_rows(report: BudgetReport) -> list[tuple[str, str]]:
    budget = "-" if report.budget is None else f"{report.budget:g}"
    period = report.limits.get("budget_period")
    if report.budget is not None and isinstance(period, str):
        budget += f" {period}"
    rows = [
        ("period", report.period),
        ("budget", budget),
        ("spent", f"{report.spent:g}"),
        ("reserved", f"{report.reserved:g}"),
    ]
    if report.budget:
        used = (report.spent + report.reserved) / report.budget
        rows.append(("used", f"{used:.0%}"))
    rows += [
        ("by task type", _amounts_text(report.by_task_type)),
        ("by model", _amounts_text(report.by_model)),
    ]
    rows += [
        (f"limit {key.replace('_', ' ')}", _limit_value(key, value))
        for key, value in report.limits.items()
        if not key.startswith("budget")  # shown above
    ]
    return rows


def _limit_value(key: str, value: Any) -> str:
    if value is None:
        return "unlimited" if key.startswith("max_") else "-"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:g}"
    return value if isinstance(value, str) else _compact(value)


@app.command()
@_handles_errors
def budget(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the spend of the caller's workspace this budget period, with its limits."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        report = cp.get_budget()
    if settings.json:
        _print_json(report.raw)
    else:
        out.print(_kv_table(_budget_rows(report)))


# -- audit -------------------------------------------------------------------------
def _verify_dict(result: VerifyResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "checked": result.checked,
        "first_broken_seq": result.first_broken_seq,
        "reason": result.reason,
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
    }


@dataclass(frozen=True)
class _ExportCheck:
    """``verify_export`` on a file, with the file's line number of each checked event."""

    result: VerifyResult
    workspace_id: str
    broken_line: int | None


def verify_export_file(path: Path, workspace_id: str | None = None) -> _ExportCheck:
    """Check an ``audit export`` file; the workspace defaults to the first event's.

    ``broken_line`` is the 1-based line of the file that holds the first broken event.
    """
    lines = _read_text(path, "--file").splitlines()
    numbered = [number for number, line in enumerate(lines, start=1) if line.strip()]
    if workspace_id is None:
        workspace_id = "default"
        if numbered:
            try:
                first = json.loads(lines[numbered[0] - 1])
            except ValueError:
                first = None
            if isinstance(first, dict) and isinstance(first.get("workspace_id"), str):
                workspace_id = first["workspace_id"]
    result = verify_export(workspace_id, lines)
    broken_line = None
    seq = result.first_broken_seq
    if seq is not None and 1 <= seq <= len(numbered):
        broken_line = numbered[seq - 1]
    return _ExportCheck(result, workspace_id, broken_line)


@audit_app.command("verify")
@_handles_errors
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Check this 'audit export' file offline instead of asking the server."
        ),
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", help="With --file: the workspace the export must belong to."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check the hash chain of the audit trail: on the server (the caller's workspace), or
    offline in an export. Exit 9 naming the first broken event (and its line) if any."""
    settings = _settings(ctx, url, token, json_output)
    if file is None:
        if workspace is not None:
            raise UsageProblem("--workspace applies to --file only")
        with _client(settings) as cp:
            result = cp.audit_verify()
        where, line = "the audit chain", None
    else:
        check = verify_export_file(file, workspace)
        result, line = check.result, check.broken_line
        where = f"{file} (workspace {check.workspace_id})"
    if settings.json:
        _print_json({**_verify_dict(result), **({"line": line} if file is not None else {})})
    if not result.ok:
        at = "" if result.first_broken_seq is None else f" at event {result.first_broken_seq}"
        on_line = "" if line is None else f" (line {line})"
        raise AuditChainBroken(f"{where} is broken{at}{on_line}: {result.reason}")
    if not settings.json:
        out.print(
            f"ok: {where} is intact, {result.checked} event(s) checked; "
            f"head {result.head_seq} {result.head_hash}",
            markup=False,
            highlight=False,
        )


@audit_app.command("export")
@_handles_errors
def audit_export(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file [default: stdout]."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Export the audit trail of the caller's workspace as JSON lines, one event per
    line with its hash; check it later with 'aragora audit verify --file'."""
    settings = _settings(ctx, url, token, json_output)
    with _client(settings) as cp:
        if output is None or str(output) == "-":
            count = cp.export_audit(sys.stdout)
            sys.stdout.flush()
            return
        count = _export_to_file(cp, output)
    if settings.json:
        _print_json({"events": count, "output": str(output)})
    else:
        err.print(f"exported {count} audit event(s) to {output}", markup=False)


def _export_to_file(cp: ControlPlaneClient, output: Path) -> int:
    """Write the export next to ``output`` and move it into place once complete."""
    directory = output.parent if str(output.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageProblem(f"--output: cannot write to {str(directory)!r}: {exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            count = cp.export_audit(sink)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return count


# -- keys --------------------------------------------------------------------------
@keys_app.command("rotate")
@_handles_errors
def keys_rotate(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(help="Store URL, as for 'aragora serve' [default: as 'aragora serve']."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory of the embedded store, as for serve."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Re-encrypt under the first key of ARAGORA_ENCRYPTION_KEYS every task payload and
    result that an older listed key encrypted, in every workspace of the store.

    Works on the store directly (the same settings as 'aragora serve'), and may run while
    servers serve traffic: put the new key first everywhere, run this, then drop the
    old keys.
    """
    from aragora.crypto import PayloadCipher
    from aragora.server.run import config_for_serve
    from aragora.store import sqlite_path_from_url

    settings = _settings(ctx, None, None, json_output)
    cipher = PayloadCipher.from_env()
    if cipher is None:
        raise UsageProblem(
            "ARAGORA_ENCRYPTION_KEYS is not set: list the new key first and the old ones "
            "after it (new-id:BASE64,old-id:BASE64)"
        )
    config = config_for_serve(store, None if data_dir is None else str(data_dir), os.environ)
    url = config.effective_store_url
    if url.startswith("sqlite:") and not Path(sqlite_path_from_url(url)).is_file():
        raise UsageProblem(f"no store at {sqlite_path_from_url(url)}; give --store or --data-dir")
    rotated, workspaces = asyncio.run(_rotate_keys(config, cipher))
    if settings.json:
        _print_json(
            {
                "rotated_tasks": rotated,
                "workspaces": workspaces,
                "primary_key_id": cipher.primary_key_id,
            }
        )
    else:
        out.print(
            f"re-encrypted {rotated} task(s) under key {cipher.primary_key_id!r} "
            f"in {len(workspaces)} workspace(s)",
            markup=False,
            highlight=False,
        )


async def _rotate_keys(config: ControlPlaneConfig, cipher: PayloadCipher) -> tuple[int, list[str]]:
    from aragora.control_plane.coordinator import ControlPlaneCoordinator
    from aragora.crypto import rotate_tasks

    async with ControlPlaneCoordinator(config, run_reaper=False, cipher=cipher) as cp:
        workspaces = list(await cp.store.list_workspaces())
        rotated = await rotate_tasks(cp.store, cipher, workspaces)
    return rotated, workspaces


# -- entry point -------------------------------------------------------------------
@contextmanager
def _no_traceback() -> Iterator[None]:
    """Last line of defence: an unexpected error still prints one line, not a traceback."""
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("ARAGORA_DEBUG"):
            raise
        err.print(
            f"error: unexpected {type(exc).__name__}: {exc} (set ARAGORA_DEBUG=1 for details)",
            markup=False,
        )
        raise SystemExit(ExitCode.TASK_FAILED) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of ``aragora``."""
    with _no_traceback():
        app(args=None if argv is None else list(argv), prog_name="aragora")


if __name__ == "__main__":
    main()
