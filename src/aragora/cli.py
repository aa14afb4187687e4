"""The ``aragora`` command line: run a server or an agent, and drive tasks and agents.

Every command that talks to a server takes ``--url`` and ``--token`` (defaults:
ARAGORA_URL, else http://127.0.0.1:8080, and ARAGORA_TOKEN) and ``--json`` for
machine-readable output; they may also be given before the command name. Errors print
one line on stderr and end with an exit status that says what went wrong (see
``EXIT_CODES_HELP``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import click
import typer
from rich.console import Console
from rich.table import Table

from aragora import __version__
from aragora.client import (
    AuthenticationError,
    ControlPlaneClient,
    ServerError,
    ServerHealth,
    ServerUnreachableError,
)
from aragora.control_plane.errors import (
    ConfigError,
    ConflictError,
    ControlPlaneError,
    NotFoundError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
)
from aragora.control_plane.models import AgentInfo, Task, TaskPriority, TaskStatus
from aragora.control_plane.serialization import agent_to_dict, task_to_dict


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


EXIT_CODES_HELP = """\b
Exit status:
  0  success
  1  the task failed or was cancelled (also: any other error)
  2  usage or validation error (bad option, bad JSON, rejected field)
  3  not found (unknown task or agent)
  4  authentication error (missing or wrong token)
  5  server unreachable or unavailable (no answer, store down, server error)
  6  timed out waiting
  7  conflict (e.g. retry of a task that has not failed)
"""

P = ParamSpec("P")
R = TypeVar("R")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(
    name="aragora",
    help="Aragora control plane: run the server and agents, submit and follow tasks.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
agents_app = typer.Typer(
    help="Inspect registered agents.", no_args_is_help=True, epilog=EXIT_CODES_HELP
)
task_app = typer.Typer(
    help="Submit, inspect, wait for, cancel and retry tasks.",
    no_args_is_help=True,
    epilog=EXIT_CODES_HELP,
)
agent_app = typer.Typer(help="Run an agent process.", no_args_is_help=True, epilog=EXIT_CODES_HELP)
app.add_typer(agents_app, name="agents")
app.add_typer(task_app, name="task")
app.add_typer(agent_app, name="agent")


# -- shared options ----------------------------------------------------------------
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Server URL [env ARAGORA_URL, default http://127.0.0.1:8080]."),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token [env ARAGORA_TOKEN].")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]


@dataclass
class _Globals:
    url: str | None = None
    token: str | None = None
    json: bool = False


@app.callback()
def _root(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Aragora control plane: run the server and agents, submit and follow tasks."""
    if version:
        out.print(f"aragora {__version__}")
        raise typer.Exit(ExitCode.OK)
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
        return f"authentication failed ({exc.status}): {exc.detail}; check --token / ARAGORA_TOKEN"
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
        except (ControlPlaneError, TimeoutError, UsageProblem) as exc:
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
            help="Store URL: sqlite:///PATH or redis://HOST:PORT/DB "
            "[default: an SQLite file in --data-dir]."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Directory of the embedded store's files."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the HTTP server. ARAGORA_ADMIN_TOKEN, when set, is required of every caller;
    other settings come from ARAGORA_<FIELD> variables (e.g. ARAGORA_TASK_TIMEOUT)."""
    from aragora.server.run import config_for_serve
    from aragora.server.run import serve as run_server

    config = config_for_serve(store, None if data_dir is None else str(data_dir), os.environ)
    run_server(
        config,
        host=host,
        port=port,
        admin_token=os.environ.get("ARAGORA_ADMIN_TOKEN") or None,
        log_level=log_level,
    )


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
