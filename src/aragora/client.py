"""HTTP clients of the control plane: ``ControlPlaneClient`` (sync) and ``AsyncControlPlaneClient``.

Both speak the JSON API under ``/api/control-plane`` and return the library's own
models (``Task``, ``AgentInfo``, ``HeartbeatResult``, ``TokenInfo``, ``Rule``,
``AuditEvent``, ``VerifyResult``), so code written against the in-process
``ControlPlaneCoordinator`` reads the same over HTTP::

    with ControlPlaneClient() as cp:                      # ARAGORA_URL / ARAGORA_TOKEN
        task_id = cp.submit_task("debate", {"topic": "x"}, ["debate"], priority="high")
        result = cp.wait_for_result(task_id, timeout_s=120)

Credentials. Every request carries ``Authorization: Bearer <token>``; the token is the
``token`` argument, else ARAGORA_TOKEN, else (only when talking to the default local
URL) the admin token a local ``aragora serve`` wrote to ``$ARAGORA_DATA_DIR/admin.token``
or ``./.aragora/admin.token`` (see ``resolve_token``).

Errors. Problem responses (RFC 9457 ``application/problem+json``) are mapped onto the
library's exception tree in ``aragora.control_plane.errors``, so ``except
TaskNotFoundError`` works the same in-process and over HTTP. Failures that only a
remote caller can meet get their own classes here::

    ControlPlaneError                      (aragora.control_plane.errors)
    ├── ... the library's errors: 400/413/422 ValidationError, 404 *NotFoundError
    │       (tasks, agents, workspaces, tokens, rules), 409 LeaseLostError /
    │       TaskCancelledError / InvalidStateError / WorkspaceExistsError /
    │       AuditIntegrityError,
    │       402 BudgetExceededError, 403 quota-exceeded QuotaExceededError,
    │       503 StoreUnavailableError
    ├── ServerUnreachableError   no answer: connection refused, reset, or timed out
    ├── AuthenticationError      401: missing, malformed, unknown, expired or revoked token
    ├── PermissionDeniedError    403: the token is valid but may not do this
    └── ServerError              any other unexpected answer (e.g. a 500)
        └── RateLimitedError     429: too many requests; retry after ``retry_after_s``

``RateLimitedError`` is a ``ServerError`` so that code which backs off and retries on
transient server answers (the agent SDK does) treats a rate limit the same way.

Design. Each API call is described once, as a ``_Call`` (method, path, body and how to
decode the answer); multi-step operations such as ``wait_for_task`` are generators that
yield calls and receive decoded answers. The sync and async clients only differ in the
few lines that send a call, so they cannot drift apart.
"""

from __future__ import annotations

import email.utils
import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from aragora import __version__
from aragora.audit.base import AuditIntegrityError
from aragora.audit.events import AuditEvent, canonical_json
from aragora.audit.log import TextSink
from aragora.audit.verify import VerifyResult
from aragora.control_plane.errors import (
    AgentNotFoundError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    ControlPlaneError,
    InvalidStateError,
    LeaseLostError,
    NotFoundError,
    QuotaExceededError,
    StoreUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
)
from aragora.control_plane.models import (
    AgentInfo,
    AgentStatus,
    BudgetPeriod,
    HeartbeatResult,
    Task,
    TaskPriority,
    TaskStatus,
)
from aragora.control_plane.serialization import agent_from_dict, task_from_dict
from aragora.store.base import TaskPage
from aragora.tenancy.errors import (
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
)
from aragora.tenancy.models import Role, TokenInfo, WorkspaceQuotas

if TYPE_CHECKING:
    from aragora.policy.models import Rule

__all__ = [
    "ADMIN_TOKEN_FILE",
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "MAX_WAIT_SLICE_S",
    "AsyncControlPlaneClient",
    "AuditPage",
    "AuthenticationError",
    "BudgetReport",
    "BudgetSettings",
    "ControlPlaneClient",
    "PermissionDeniedError",
    "PolicySet",
    "RateLimitedError",
    "ServerError",
    "ServerHealth",
    "ServerUnreachableError",
    "WorkspaceInfo",
    "error_from_response",
    "local_admin_token_file",
    "resolve_token",
    "resolve_url",
    "task_outcome",
    "token_from_dict",
    "token_to_dict",
]

DEFAULT_URL = "http://127.0.0.1:8080"
"""Where the clients look for the server when neither an argument nor ARAGORA_URL says."""

DEFAULT_DATA_DIR: Final = ".aragora"
"""The data directory ``aragora serve`` uses when neither --data-dir nor ARAGORA_DATA_DIR
says (``aragora.server.run.DEFAULT_DATA_DIR``)."""

ADMIN_TOKEN_FILE: Final = "admin.token"
"""The file in the data directory where ``aragora serve`` keeps the admin token it issued."""

API_PREFIX = "/api/control-plane"
MAX_WAIT_SLICE_S = 60.0
"""The server caps one long-poll at 60 s; longer waits are made of several slices."""

DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_RETRY_AFTER_S = 1.0
"""What ``RateLimitedError.retry_after_s`` says when the server gave no Retry-After."""
AUDIT_EXPORT_PAGE = 1000

T = TypeVar("T")


# -- errors ------------------------------------------------------------------------
class ServerUnreachableError(ControlPlaneError):
    """No answer from the server: connection refused or reset, DNS failure, or a timeout.

    The request may or may not have been carried out; retrying is safe for reads and for
    the fenced writes (complete/fail present a lease token).
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the control plane at {url}: {reason}")
        self.url = url
        self.reason = reason


class AuthenticationError(ControlPlaneError):
    """The server did not accept the credentials (401): no token, or one that is
    malformed, unknown, expired or revoked. The server does not say which.

    ``token_file`` is the local admin token file the client read the token from, if it
    did (see ``resolve_token``).
    """

    def __init__(self, status: int, detail: str, token_file: Path | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.token_file = token_file


class PermissionDeniedError(ControlPlaneError):
    """The token is valid but may not do this (403 ``forbidden``): its role does not
    grant the action, a rule of its workspace forbids it, or it acts as an agent another
    token registered. Nothing was changed.

    ``rule_ids`` names the workspace rules that denied (empty when the role decided);
    ``problem`` is the server's whole problem document.
    """

    def __init__(self, detail: str, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = 403
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        rule_ids = self.problem.get("rule_ids")
        self.rule_ids: tuple[str, ...] = (
            tuple(str(r) for r in rule_ids) if isinstance(rule_ids, list) else ()
        )


class ServerError(ControlPlaneError):
    """An answer the API does not document for this call, such as a 500; and, as
    ``RateLimitedError``, a 429 (the server is busy for this caller, retry later)."""

    def __init__(
        self,
        status: int,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        *,
        message: str | None = None,
    ) -> None:
        super().__init__(message or f"server answered {status}: {detail}")
        self.status = status
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})


class RateLimitedError(ServerError):
    """Too many requests (429 ``rate-limited``): nothing was done; the same request may
    succeed after ``retry_after_s`` seconds (the server's Retry-After)."""

    def __init__(
        self, detail: str, retry_after_s: float, problem: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(
            429, detail, problem, message=f"rate limited: {detail} (retry after {retry_after_s:g}s)"
        )
        self.retry_after_s = retry_after_s


# -- settings ----------------------------------------------------------------------
def resolve_url(url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The server URL: the argument, else ARAGORA_URL, else ``DEFAULT_URL``; no trailing '/'."""
    env = os.environ if environ is None else environ
    value = url or env.get("ARAGORA_URL") or DEFAULT_URL
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"server URL must start with http:// or https://, got {value!r}")
    return value.rstrip("/")


_DEFAULT_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _is_default_local_url(url: str) -> bool:
    """Whether ``url`` is the default server of this machine (port 8080 on loopback)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in _DEFAULT_LOCAL_HOSTS
        and port == urlsplit(DEFAULT_URL).port
        and parts.path in ("", "/")
    )


def local_admin_token_file(
    url: str | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The admin token file of a local ``aragora serve``, if the clients may use it.

    Only for the default local URL (``http://127.0.0.1:8080`` or
    ``http://localhost:8080``): ``$ARAGORA_DATA_DIR/admin.token``, else
    ``./.aragora/admin.token``, when that file exists. ``None`` otherwise, so a token
    read from disk is never sent to another server.
    """
    env = os.environ if environ is None else environ
    if not _is_default_local_url(resolve_url(url, env)):
        return None
    path = Path(env.get("ARAGORA_DATA_DIR") or DEFAULT_DATA_DIR).expanduser() / ADMIN_TOKEN_FILE
    return path if path.is_file() else None


def _read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def _resolve_token_and_file(
    token: str | None, url: str | None, environ: Mapping[str, str] | None
) -> tuple[str | None, Path | None]:
    env = os.environ if environ is None else environ
    explicit = token or env.get("ARAGORA_TOKEN")
    if explicit:
        return explicit, None
    path = local_admin_token_file(url, env)
    if path is None:
        return None, None
    secret = _read_token_file(path)
    return secret, (path if secret else None)


def resolve_token(
    token: str | None = None,
    environ: Mapping[str, str] | None = None,
    url: str | None = None,
) -> str | None:
    """The bearer token: the argument, else ARAGORA_TOKEN, else the content of
    ``local_admin_token_file(url)`` when talking to the default local URL, else none.

    ``url`` is the server the token is meant for (default: ``resolve_url()``).
    """
    return _resolve_token_and_file(token, url, environ)[0]


# -- value objects -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerHealth:
    """The server's health report (``application/health+json``).

    ``status`` is ``pass``, ``warn`` or ``fail``; ``checks`` is the report's ``checks``
    member as the server sent it.
    """

    status: str
    checks: Any = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True unless the server reports ``fail`` (``warn`` still serves requests)."""
        return self.status != "fail"


def task_outcome(task: Task) -> Any:
    """The result of a terminal task, or the library's error for how it ended.

    COMPLETED gives ``task.result``; CANCELLED raises ``TaskCancelledError``; FAILED
    raises ``TaskFailedError`` carrying every attempt's error.
    """
    if task.status is TaskStatus.COMPLETED:
        return task.result
    if task.status is TaskStatus.CANCELLED:
        raise TaskCancelledError(task.id)
    if task.status is TaskStatus.FAILED:
        raise TaskFailedError(task.id, task.errors)
    raise InvalidStateError(f"task {task.id!r} is still {task.status.value}")


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """A workspace budget: at most ``limit`` spent plus reserved cost per ``period`` (UTC
    day or month); crossing ``soft_ratio`` of it raises an alert."""

    limit: float
    period: BudgetPeriod = BudgetPeriod.MONTHLY
    soft_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the API (``soft_ratio`` left out when not set)."""
        body: dict[str, Any] = {"limit": self.limit, "period": BudgetPeriod(self.period).value}
        if self.soft_ratio is not None:
            body["soft_ratio"] = self.soft_ratio
        return body


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    """A workspace as the server shows it: plan, effective quotas and budget.

    ``raw`` is the server's JSON object as it was sent.
    """

    name: str
    plan: str
    quotas: WorkspaceQuotas
    budget: BudgetSettings | None = None
    created_at: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """Spend of the caller's workspace in the current budget period.

    ``budget`` is the limit (``None``: no budget); ``reserved`` is held by tasks not
    finished yet; ``limits`` are the workspace limits the server enforces; ``raw`` is
    the server's JSON object.
    """

    period: str
    budget: float | None
    reserved: float
    spent: float
    by_task_type: dict[str, float]
    by_model: dict[str, float]
    limits: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The access rules of the caller's workspace and their version (which grows with
    every change)."""

    version: int
    rules: list[Rule]


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Events of the audit trail, oldest first; pass ``next_after_seq`` back as
    ``after_seq`` for the next page (``None``: this page reached the end)."""

    events: list[AuditEvent]
    next_after_seq: int | None


# -- calls: one description per route, shared by both clients ----------------------
_NO_BODY: Any = object()
ConflictKind = Literal["lease", "state", "exists", "generic"]
TargetKind = Literal["workspace", "token", "rule"]


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One HTTP request and how to turn a successful answer into a value."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    body: Any = _NO_BODY
    params: Mapping[str, str] | None = None
    wait_s: float = 0.0
    task_id: str | None = None
    agent_id: str | None = None
    conflict: ConflictKind = "generic"
    target: tuple[TargetKind, str] | None = None
    accept: frozenset[int] = frozenset({200, 201, 204})


def _seg(value: str) -> str:
    return quote(value, safe="")


def _number(value: float) -> str:
    """A query-string number: integral values without a fraction, others to the millisecond."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerError(response.status_code, "the answer is not valid JSON") from None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    if not isinstance(body, dict):
        raise ServerError(response.status_code, "expected a JSON object")
    return body


def _decode_task(response: httpx.Response) -> Task:
    try:
        return task_from_dict(_json_object(response))
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed task: {exc!r}") from None


def _decode_tasks(response: httpx.Response) -> list[Task]:
    try:
        return [task_from_dict(t) for t in _json_object(response)["tasks"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed task list: {exc!r}") from None


def _decode_item_outcomes(
    response: httpx.Response, conflict: ConflictKind = "lease"
) -> list[Task | ControlPlaneError]:
    """The per-item answers of a batch route: each the task, or the library exception
    its problem+json stands for (as ``error_from_response`` would raise for one item)."""
    outcomes: list[Task | ControlPlaneError] = []
    try:
        for item in _json_object(response)["results"]:
            if int(item["status"]) == 200:
                outcomes.append(task_from_dict(item["task"]))
                continue
            answer = httpx.Response(int(item["status"]), json=item.get("problem") or {})
            outcomes.append(
                error_from_response(answer, task_id=str(item["task_id"]), conflict=conflict)
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed batch answer: {exc!r}") from None
    return outcomes


def _decode_optional_task(response: httpx.Response) -> Task | None:
    if response.status_code == 204 or not response.content:
        return None
    return _decode_task(response)


def _decode_agent(response: httpx.Response) -> AgentInfo:
    try:
        return agent_from_dict(_json_object(response))
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed agent: {exc!r}") from None


def _decode_agents(response: httpx.Response) -> list[AgentInfo]:
    try:
        return [agent_from_dict(a) for a in _json_object(response)["agents"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed agent list: {exc!r}") from None


def _decode_heartbeat(response: httpx.Response) -> HeartbeatResult:
    try:
        body = _json_object(response)
        return HeartbeatResult(
            agent=agent_from_dict(body["agent"]),
            cancelled_task_ids=tuple(str(t) for t in body.get("cancelled_task_ids") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed heartbeat answer: {exc!r}") from None


def _decode_task_page(response: httpx.Response) -> TaskPage:
    try:
        body = _json_object(response)
        return TaskPage(
            tasks=[task_from_dict(t) for t in body["tasks"]], next_cursor=body.get("next_cursor")
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(response.status_code, f"malformed task list: {exc!r}") from None


def _decode_task_id(response: httpx.Response) -> str:
    body = _json_object(response)
    task_id = body.get("task_id")
    if not isinstance(task_id, str):
        raise ServerError(response.status_code, "submit answer lacks task_id")
    return task_id


def _decode_nothing(response: httpx.Response) -> None:
    return None


def _decode_health(response: httpx.Response) -> ServerHealth:
    body = _json_object(response)
    return ServerHealth(status=str(body.get("status", "fail")), checks=body.get("checks"), raw=body)


def _decode_probe(response: httpx.Response) -> bool:
    return response.status_code == 200


def _malformed(response: httpx.Response, what: str, exc: Exception) -> ServerError:
    return ServerError(response.status_code, f"malformed {what}: {exc!r}")


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _quotas_from_dict(value: Any) -> WorkspaceQuotas:
    """Quotas as sent; a field the server left out keeps the ``standard`` plan's value."""
    if not isinstance(value, Mapping):
        raise TypeError("quotas must be an object")
    limits: dict[str, int | None] = {}
    for quota in WorkspaceQuotas.__dataclass_fields__:
        if quota in value:
            limits[quota] = None if value[quota] is None else int(value[quota])
    return WorkspaceQuotas(**limits)


def _workspace_from_dict(body: Mapping[str, Any]) -> WorkspaceInfo:
    name = body["name"]
    if not isinstance(name, str):
        raise TypeError("name must be a string")
    budget_in = body.get("budget")
    budget = None
    if isinstance(budget_in, Mapping) and budget_in.get("limit") is not None:
        budget = BudgetSettings(
            limit=float(budget_in["limit"]),
            period=BudgetPeriod(budget_in.get("period") or BudgetPeriod.MONTHLY),
            soft_ratio=_float_or_none(budget_in.get("soft_ratio")),
        )
    return WorkspaceInfo(
        name=name,
        plan=str(body.get("plan") or "standard"),
        quotas=_quotas_from_dict(body.get("quotas") or {}),
        budget=budget,
        created_at=_float_or_none(body.get("created_at")),
        raw=dict(body),
    )


def _decode_workspace(response: httpx.Response) -> WorkspaceInfo:
    try:
        return _workspace_from_dict(_json_object(response))
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "workspace", exc) from None


def _decode_workspaces(response: httpx.Response) -> list[WorkspaceInfo]:
    try:
        return [_workspace_from_dict(w) for w in _json_object(response)["workspaces"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "workspace list", exc) from None


def token_from_dict(body: Mapping[str, Any]) -> TokenInfo:
    """A ``TokenInfo`` from the API's JSON shape of a token (``workspace`` names the
    workspace; times are epoch seconds on the server's clock)."""
    token_id = body["token_id"]
    workspace = body["workspace"]
    if not isinstance(token_id, str) or not isinstance(workspace, str):
        raise TypeError("token_id and workspace must be strings")
    created_by = body.get("created_by")
    return TokenInfo(
        token_id=token_id,
        workspace_id=workspace,
        role=Role(body["role"]),
        created_at=float(body.get("created_at") or 0.0),
        expires_at=_float_or_none(body.get("expires_at")),
        revoked_at=_float_or_none(body.get("revoked_at")),
        created_by=None if created_by is None else str(created_by),
    )


def token_to_dict(info: TokenInfo) -> dict[str, Any]:
    """The API's JSON shape of a token (the inverse of ``token_from_dict``)."""
    return {
        "token_id": info.token_id,
        "workspace": info.workspace_id,
        "role": info.role.value,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "revoked_at": info.revoked_at,
        "created_by": info.created_by,
    }


def _decode_issued_token(response: httpx.Response) -> tuple[TokenInfo, str]:
    try:
        body = _json_object(response)
        secret = body["token"]
        if not isinstance(secret, str) or not secret:
            raise TypeError("token must be a non-empty string")
        return token_from_dict(body), secret
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "token", exc) from None


def _decode_tokens(response: httpx.Response) -> list[TokenInfo]:
    try:
        return [token_from_dict(t) for t in _json_object(response)["tokens"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "token list", exc) from None


def _rule_from_dict(body: Mapping[str, Any]) -> Rule:
    from aragora.policy.models import Rule  # here: cedar loads only when used

    rule_id, text = body["rule_id"], body["text"]
    if not isinstance(rule_id, str) or not isinstance(text, str):
        raise TypeError("rule_id and text must be strings")
    return Rule(
        rule_id=rule_id,
        text=text,
        description=str(body.get("description") or ""),
        updated_at=float(body.get("updated_at") or 0.0),
    )


def _decode_rule(response: httpx.Response) -> Rule:
    try:
        return _rule_from_dict(_json_object(response))
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "rule", exc) from None


def _decode_policies(response: httpx.Response) -> PolicySet:
    try:
        body = _json_object(response)
        return PolicySet(
            version=int(body["version"]), rules=[_rule_from_dict(r) for r in body["rules"]]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "policy list", exc) from None


def _amounts(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise TypeError("expected an object of amounts")
    return {str(k): float(v) for k, v in value.items()}


def _decode_budget(response: httpx.Response) -> BudgetReport:
    try:
        body = _json_object(response)
        limits = body.get("limits") or {}
        if not isinstance(limits, dict):
            raise TypeError("limits must be an object")
        return BudgetReport(
            period=str(body["period"]),
            budget=_float_or_none(body.get("budget")),
            reserved=float(body["reserved"]),
            spent=float(body["spent"]),
            by_task_type=_amounts(body.get("by_task_type") or {}),
            by_model=_amounts(body.get("by_model") or {}),
            limits=limits,
            raw=body,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "budget report", exc) from None


def _decode_audit_page(response: httpx.Response) -> AuditPage:
    try:
        body = _json_object(response)
        next_after = body.get("next_after_seq")
        return AuditPage(
            events=[AuditEvent.from_dict(e) for e in body["events"]],
            next_after_seq=None if next_after is None else int(next_after),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "audit page", exc) from None


def _decode_verify(response: httpx.Response) -> VerifyResult:
    try:
        body = _json_object(response)
        broken = body.get("first_broken_seq")
        reason = body.get("reason")
        extra: dict[str, Any] = {}
        if body.get("head_seq") is not None:
            extra["head_seq"] = int(body["head_seq"])
        if isinstance(body.get("head_hash"), str):
            extra["head_hash"] = body["head_hash"]
        return VerifyResult(
            ok=bool(body["ok"]),
            checked=int(body["checked"]),
            first_broken_seq=None if broken is None else int(broken),
            reason=None if reason is None else str(reason),
            **extra,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(response, "verification result", exc) from None


def _check_wait(wait_s: float, name: str = "wait_s") -> float:
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not math.isfinite(wait_s):
        raise ValidationError(name, "must be a finite number of seconds")
    if wait_s < 0:
        raise ValidationError(name, "must be 0 or more seconds")
    return float(wait_s)


def _long_poll_s(wait_s: float) -> float:
    """A valid wait of one long poll: checked, and cut to the server's cap of 60 s."""
    return min(_check_wait(wait_s), MAX_WAIT_SLICE_S)


class _Api:
    """Builders of the calls of every route; pure functions of their arguments."""

    @staticmethod
    def register_agent(
        agent_id: str,
        capabilities: Sequence[str],
        model: str,
        max_concurrent_tasks: int,
        metadata: Mapping[str, Any] | None,
    ) -> _Call[AgentInfo]:
        body: dict[str, Any] = {
            "agent_id": agent_id,
            "capabilities": list(capabilities),
            "model": model,
            "max_concurrent_tasks": max_concurrent_tasks,
        }
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return _Call(
            "POST", f"{API_PREFIX}/agents/register", _decode_agent, body=body, agent_id=agent_id
        )

    @staticmethod
    def list_agents(
        capability: str | None, status: AgentStatus | str | None
    ) -> _Call[list[AgentInfo]]:
        params: dict[str, str] = {}
        if capability is not None:
            params["capability"] = capability
        if status is not None:
            params["status"] = str(status.value if isinstance(status, AgentStatus) else status)
        return _Call("GET", f"{API_PREFIX}/agents", _decode_agents, params=params)

    @staticmethod
    def get_agent(agent_id: str) -> _Call[AgentInfo]:
        return _Call(
            "GET", f"{API_PREFIX}/agents/{_seg(agent_id)}", _decode_agent, agent_id=agent_id
        )

    @staticmethod
    def heartbeat(agent_id: str, status: AgentStatus | str | None) -> _Call[HeartbeatResult]:
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = str(status.value if isinstance(status, AgentStatus) else status)
        return _Call(
            "POST",
            f"{API_PREFIX}/agents/{_seg(agent_id)}/heartbeat",
            _decode_heartbeat,
            body=body,
            agent_id=agent_id,
        )

    @staticmethod
    def deregister_agent(agent_id: str) -> _Call[None]:
        return _Call(
            "DELETE", f"{API_PREFIX}/agents/{_seg(agent_id)}", _decode_nothing, agent_id=agent_id
        )

    @staticmethod
    def submit_task(
        task_type: str,
        payload: Any,
        required_capabilities: Sequence[str],
        priority: TaskPriority | str,
        idempotency_key: str | None,
        timeout_s: float | None,
        max_retries: int | None,
        metadata: Mapping[str, Any] | None,
        cost_estimate: float | None = None,
    ) -> _Call[str]:
        body: dict[str, Any] = {
            "task_type": task_type,
            "payload": payload,
            "required_capabilities": list(required_capabilities),
            "priority": str(priority.value if isinstance(priority, TaskPriority) else priority),
        }
        optional = {
            "idempotency_key": idempotency_key,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "metadata": None if metadata is None else dict(metadata),
            "cost_estimate": cost_estimate,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return _Call("POST", f"{API_PREFIX}/tasks/submit", _decode_task_id, body=body)

    @staticmethod
    def get_task(task_id: str, wait_s: float = 0.0) -> _Call[Task]:
        params = {"wait_s": _number(wait_s)} if wait_s > 0 else None
        return _Call(
            "GET",
            f"{API_PREFIX}/tasks/{_seg(task_id)}",
            _decode_task,
            params=params,
            wait_s=wait_s,
            task_id=task_id,
        )

    @staticmethod
    def list_tasks(
        status: TaskStatus | str | None,
        task_type: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> _Call[TaskPage]:
        params: dict[str, str] = {}
        if status is not None:
            params["status"] = str(status.value if isinstance(status, TaskStatus) else status)
        if task_type is not None:
            params["task_type"] = task_type
        if limit is not None:
            params["limit"] = str(limit)
        if cursor is not None:
            params["cursor"] = cursor
        return _Call("GET", f"{API_PREFIX}/tasks", _decode_task_page, params=params)

    @staticmethod
    def claim_task(agent_id: str, wait_s: float) -> _Call[Task | None]:
        body: dict[str, Any] = {"agent_id": agent_id}
        if wait_s > 0:
            body["wait_s"] = wait_s
        return _Call(
            "POST",
            f"{API_PREFIX}/tasks/claim",
            _decode_optional_task,
            body=body,
            wait_s=wait_s,
            agent_id=agent_id,
        )

    @staticmethod
    def claim_tasks(agent_id: str, max_tasks: int, wait_s: float) -> _Call[list[Task]]:
        body: dict[str, Any] = {"agent_id": agent_id, "max_tasks": max_tasks}
        if wait_s > 0:
            body["wait_s"] = wait_s
        # No agent_id: only a typed agent-not-found problem means the agent is unknown;
        # a plain 404 is a server without this route (the agent SDK falls back on it).
        return _Call(
            "POST", f"{API_PREFIX}/tasks/claim-batch", _decode_tasks, body=body, wait_s=wait_s
        )

    @staticmethod
    def complete_tasks(
        items: Sequence[tuple[str, Any, str, float | None]],
    ) -> _Call[list[Task | ControlPlaneError]]:
        body = {
            "items": [
                {"task_id": task_id, "lease_token": lease, "result": result}
                | ({} if cost is None else {"cost": cost})
                for task_id, result, lease, cost in items
            ]
        }
        return _Call("POST", f"{API_PREFIX}/tasks/complete-batch", _decode_item_outcomes, body=body)

    @staticmethod
    def fail_tasks(
        items: Sequence[tuple[str, str, str, bool]],
    ) -> _Call[list[Task | ControlPlaneError]]:
        body = {
            "items": [
                {"task_id": task_id, "lease_token": lease, "error": error, "retryable": retryable}
                for task_id, error, lease, retryable in items
            ]
        }
        return _Call("POST", f"{API_PREFIX}/tasks/fail-batch", _decode_item_outcomes, body=body)

    @staticmethod
    def complete_task(
        task_id: str, result: Any, lease_token: str, cost: float | None
    ) -> _Call[Task]:
        body: dict[str, Any] = {"lease_token": lease_token, "result": result}
        if cost is not None:
            body["cost"] = cost
        return _Call(
            "POST",
            f"{API_PREFIX}/tasks/{_seg(task_id)}/complete",
            _decode_task,
            body=body,
            task_id=task_id,
            conflict="lease",
        )

    @staticmethod
    def fail_task(task_id: str, error: str, lease_token: str, retryable: bool) -> _Call[Task]:
        body = {"lease_token": lease_token, "error": error, "retryable": retryable}
        return _Call(
            "POST",
            f"{API_PREFIX}/tasks/{_seg(task_id)}/fail",
            _decode_task,
            body=body,
            task_id=task_id,
            conflict="lease",
        )

    @staticmethod
    def cancel_task(task_id: str) -> _Call[Task]:
        return _Call(
            "POST",
            f"{API_PREFIX}/tasks/{_seg(task_id)}/cancel",
            _decode_task,
            task_id=task_id,
            conflict="state",
        )

    @staticmethod
    def retry_task(task_id: str) -> _Call[Task]:
        return _Call(
            "POST",
            f"{API_PREFIX}/tasks/{_seg(task_id)}/retry",
            _decode_task,
            task_id=task_id,
            conflict="state",
        )

    @staticmethod
    def health() -> _Call[ServerHealth]:
        return _Call("GET", f"{API_PREFIX}/health", _decode_health, accept=frozenset({200, 503}))

    @staticmethod
    def probe(path: Literal["/livez", "/readyz"]) -> _Call[bool]:
        return _Call("GET", path, _decode_probe, accept=frozenset({200, 503}))

    # -- workspaces, tokens, policies, budget, audit
    @staticmethod
    def create_workspace(
        name: str,
        plan: str | None,
        quotas: Mapping[str, int | None] | None,
        budget: BudgetSettings | None,
    ) -> _Call[WorkspaceInfo]:
        body: dict[str, Any] = {"name": name}
        body.update(_workspace_changes(plan, quotas, budget))
        return _Call(
            "POST",
            f"{API_PREFIX}/workspaces",
            _decode_workspace,
            body=body,
            target=("workspace", name),
            conflict="exists",
        )

    @staticmethod
    def list_workspaces() -> _Call[list[WorkspaceInfo]]:
        return _Call("GET", f"{API_PREFIX}/workspaces", _decode_workspaces)

    @staticmethod
    def get_workspace(name: str) -> _Call[WorkspaceInfo]:
        return _Call(
            "GET",
            f"{API_PREFIX}/workspaces/{_seg(name)}",
            _decode_workspace,
            target=("workspace", name),
        )

    @staticmethod
    def update_workspace(
        name: str,
        plan: str | None,
        quotas: Mapping[str, int | None] | None,
        budget: BudgetSettings | None,
        remove_budget: bool,
    ) -> _Call[WorkspaceInfo]:
        if remove_budget and budget is not None:
            raise ValidationError("budget", "give a budget or remove it, not both")
        body = _workspace_changes(plan, quotas, budget)
        if remove_budget:
            body["budget"] = None
        return _Call(
            "PATCH",
            f"{API_PREFIX}/workspaces/{_seg(name)}",
            _decode_workspace,
            body=body,
            target=("workspace", name),
        )

    @staticmethod
    def create_token(
        role: Role | str, workspace: str | None, expires_in_s: float | None
    ) -> _Call[tuple[TokenInfo, str]]:
        body: dict[str, Any] = {"role": str(role.value if isinstance(role, Role) else role)}
        if workspace is not None:
            body["workspace"] = workspace
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return _Call(
            "POST",
            f"{API_PREFIX}/tokens",
            _decode_issued_token,
            body=body,
            target=None if workspace is None else ("workspace", workspace),
        )

    @staticmethod
    def list_tokens(workspace: str | None) -> _Call[list[TokenInfo]]:
        params = None if workspace is None else {"workspace": workspace}
        return _Call(
            "GET",
            f"{API_PREFIX}/tokens",
            _decode_tokens,
            params=params,
            target=None if workspace is None else ("workspace", workspace),
        )

    @staticmethod
    def revoke_token(token_id: str) -> _Call[None]:
        return _Call(
            "DELETE",
            f"{API_PREFIX}/tokens/{_seg(token_id)}",
            _decode_nothing,
            target=("token", token_id),
        )

    @staticmethod
    def list_policies() -> _Call[PolicySet]:
        return _Call("GET", f"{API_PREFIX}/policies", _decode_policies)

    @staticmethod
    def put_policy(rule_id: str, text: str, description: str | None) -> _Call[Rule]:
        body: dict[str, Any] = {"text": text}
        if description is not None:
            body["description"] = description
        return _Call(
            "PUT",
            f"{API_PREFIX}/policies/{_seg(rule_id)}",
            _decode_rule,
            body=body,
            target=("rule", rule_id),
        )

    @staticmethod
    def delete_policy(rule_id: str) -> _Call[None]:
        return _Call(
            "DELETE",
            f"{API_PREFIX}/policies/{_seg(rule_id)}",
            _decode_nothing,
            target=("rule", rule_id),
        )

    @staticmethod
    def get_budget() -> _Call[BudgetReport]:
        return _Call("GET", f"{API_PREFIX}/budget", _decode_budget)

    @staticmethod
    def audit_page(after_seq: int, limit: int | None) -> _Call[AuditPage]:
        params = {"after_seq": str(after_seq)}
        if limit is not None:
            params["limit"] = str(limit)
        return _Call("GET", f"{API_PREFIX}/audit", _decode_audit_page, params=params)

    @staticmethod
    def audit_verify() -> _Call[VerifyResult]:
        return _Call("GET", f"{API_PREFIX}/audit/verify", _decode_verify)


def _workspace_changes(
    plan: str | None, quotas: Mapping[str, int | None] | None, budget: BudgetSettings | None
) -> dict[str, Any]:
    """The optional members of a workspace create or update body."""
    body: dict[str, Any] = {}
    if plan is not None:
        body["plan"] = plan
    if quotas is not None:
        body["quotas"] = dict(quotas)
    if budget is not None:
        body["budget"] = budget.to_dict()
    return body


_Flow = Generator[_Call[Any], Any, T]


def _wait_flow(task_id: str, timeout_s: float | None) -> _Flow[Task]:
    """Long-poll the task in slices of at most ``MAX_WAIT_SLICE_S`` until it is terminal."""
    if timeout_s is not None:
        _check_wait(timeout_s, "timeout_s")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        remaining = MAX_WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
        slice_s = max(0.0, min(remaining, MAX_WAIT_SLICE_S))
        task: Task = yield _Api.get_task(task_id, slice_s)
        if task.is_terminal:
            return task
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"task {task_id!r} not finished within {timeout_s}s")


def _result_flow(task_id: str, timeout_s: float | None) -> _Flow[Any]:
    task = yield from _wait_flow(task_id, timeout_s)
    return task_outcome(task)


def _audit_export_flow(out: TextSink, page_size: int) -> _Flow[int]:
    """Page through the whole audit trail, writing each event as one line of canonical
    JSON (the format of ``AuditLog.export``, which ``verify_export`` checks)."""
    after_seq = 0
    written = 0
    while True:
        page: AuditPage = yield _Api.audit_page(after_seq, page_size)
        for event in page.events:
            out.write(canonical_json(event.to_dict()) + "\n")
            written += 1
        if page.next_after_seq is None or not page.events:
            return written
        after_seq = page.next_after_seq


# -- answers to exceptions ---------------------------------------------------------
def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _problem_text(problem: Mapping[str, Any], response: httpx.Response) -> str:
    detail = problem.get("detail")
    if isinstance(detail, str) and detail:
        return detail
    title = problem.get("title")
    if isinstance(title, str) and title:
        return title
    return response.reason_phrase or f"HTTP {response.status_code}"


def _problem_kind(problem: Mapping[str, Any]) -> str:
    """The problem's type and title in lower case, for telling error kinds apart."""
    return f"{problem.get('type') or ''} {problem.get('title') or ''}".lower()


PROBLEM_PREFIX = "urn:aragora:problem:"
"""Problem types of the server are ``urn:aragora:problem:<name>`` (see ``server.problems``)."""


def _problem_name(problem: Mapping[str, Any]) -> str:
    kind = problem.get("type")
    if isinstance(kind, str) and kind.startswith(PROBLEM_PREFIX):
        return kind[len(PROBLEM_PREFIX) :]
    return ""


def _validation_error(problem: Mapping[str, Any], response: httpx.Response) -> ValidationError:
    detail = _problem_text(problem, response)
    errors = problem.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return ValidationError(
            str(first.get("field") or "request"), str(first.get("reason") or detail)
        )
    raw_detail = problem.get("detail")
    if isinstance(raw_detail, list) and raw_detail and isinstance(raw_detail[0], dict):
        # FastAPI's own shape, should a validation error escape the problem handler.
        loc = [str(p) for p in raw_detail[0].get("loc", ()) if p not in ("body", "query", "path")]
        return ValidationError(".".join(loc) or "request", str(raw_detail[0].get("msg", "invalid")))
    field_name = problem.get("field")
    return ValidationError(str(field_name) if field_name else "request", detail)


def error_from_response(
    response: httpx.Response,
    *,
    task_id: str | None = None,
    agent_id: str | None = None,
    conflict: ConflictKind = "generic",
    target: tuple[TargetKind, str] | None = None,
) -> ControlPlaneError:
    """The library exception for an error answer of the API.

    ``task_id`` / ``agent_id`` / ``target`` name the object the request was about, so a
    404 can say which; ``conflict`` says what a 409 means for this route when the
    problem type is not specific (``lease`` for complete/fail, ``state`` for
    cancel/retry, ``exists`` for creating the ``target`` workspace).
    """
    status = response.status_code
    problem = _problem(response)
    detail = _problem_text(problem, response)
    name = _problem_name(problem)
    kind = name or _problem_kind(problem)
    if name == "quota-exceeded":
        return QuotaExceededError(
            str(problem.get("quota", "?")),
            _problem_number(problem.get("limit")),
            _problem_number(problem.get("current")),
        )
    if name == "budget-exceeded":
        return BudgetExceededError(
            _problem_number(problem.get("limit")),
            _problem_number(problem.get("used")),
            _problem_number(problem.get("estimate")),
        )
    if status == 429 or name == "rate-limited":
        return RateLimitedError(detail, _retry_after_s(response, problem), problem)
    if status == 401:
        return AuthenticationError(status, detail)
    if status == 403:
        return PermissionDeniedError(detail, problem)
    if status == 404:
        return _not_found(name, detail, task_id, agent_id, target)
    if status == 409:
        if name == "audit-chain-damaged":
            seq = problem.get("seq")
            return AuditIntegrityError(
                "?", detail, seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            )
        if conflict == "exists" and name in ("", "conflict", "workspace-exists"):
            return WorkspaceExistsError(target[1] if target else "?")
        if "cancel" in kind:
            return TaskCancelledError(task_id or "?")
        if "lease" in kind or (conflict == "lease" and not name):
            return LeaseLostError(task_id or "?")
        if "state" in kind or (conflict == "state" and not name):
            return InvalidStateError(detail)
        return ConflictError(detail)
    if status in (400, 413, 415, 422):
        return _validation_error(problem, response)
    if status == 503:
        return StoreUnavailableError(detail)
    return ServerError(status, detail, problem)


def _not_found(
    name: str,
    detail: str,
    task_id: str | None,
    agent_id: str | None,
    target: tuple[TargetKind, str] | None,
) -> NotFoundError:
    """The specific not-found error: by the problem type, else by what the call was about."""
    about = target[0] if target else None
    label = target[1] if target else "?"
    if name == "workspace-not-found" or (not name and about == "workspace"):
        return WorkspaceNotFoundError(label if about == "workspace" else "?")
    if name == "token-not-found" or (not name and about == "token"):
        return TokenNotFoundError(label if about == "token" else "?")
    if name == "rule-not-found" or (not name and about == "rule"):
        from aragora.policy.store import RuleNotFoundError  # here: it loads cedar

        return RuleNotFoundError(label if about == "rule" else "?")
    if name == "agent-not-found" or (not name and task_id is None and agent_id is not None):
        return AgentNotFoundError(agent_id or "?")
    if name == "task-not-found" or (not name and task_id is not None):
        return TaskNotFoundError(task_id or "?")
    return NotFoundError(detail)


def _retry_after_s(response: httpx.Response, problem: Mapping[str, Any]) -> float:
    """Seconds to wait: the problem's ``retry_after_s`` (precise), else the Retry-After
    header (whole seconds or an HTTP date), else ``DEFAULT_RETRY_AFTER_S``."""
    value = problem.get("retry_after_s")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    header = response.headers.get("retry-after")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - time.time())
    return DEFAULT_RETRY_AFTER_S


def _problem_number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


# -- the clients -------------------------------------------------------------------
class _ClientBase:
    """Settings and request building shared by the sync and async clients."""

    def __init__(self, url: str | None, token: str | None, timeout_s: float) -> None:
        self.url = resolve_url(url)
        # token_file: the local admin token file the token was read from, if it was.
        self.token, self.token_file = _resolve_token_and_file(token, self.url, None)
        self.timeout_s = timeout_s

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"User-Agent": f"aragora-client/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _request_kwargs(self, call: _Call[Any]) -> dict[str, Any]:
        """Arguments of ``httpx.Client.request``; long polls get a read timeout past their wait."""
        kwargs: dict[str, Any] = {
            "params": call.params or None,
            "timeout": httpx.Timeout(self.timeout_s + call.wait_s, connect=self.timeout_s),
        }
        if call.body is not _NO_BODY:
            kwargs["json"] = call.body
        return kwargs

    def _raise_for(self, call: _Call[Any], response: httpx.Response) -> None:
        """Raise the library's error for an answer the call does not accept."""
        if response.status_code in call.accept:
            return
        error = error_from_response(
            response,
            task_id=call.task_id,
            agent_id=call.agent_id,
            conflict=call.conflict,
            target=call.target,
        )
        if isinstance(error, AuthenticationError):
            error.token_file = self.token_file
        raise error

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachableError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException) and "timed out" not in reason:
            reason = f"timed out ({reason})"
        return ServerUnreachableError(self.url, reason)


class ControlPlaneClient(_ClientBase):
    """Blocking client of the control plane's HTTP API (one method per route).

    ``url`` and ``token`` default to ARAGORA_URL (else ``http://127.0.0.1:8080``) and
    ARAGORA_TOKEN (else a local server's admin token file; see ``resolve_token``).
    ``timeout_s`` bounds every request; long polls add their wait to it.
    Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout_s)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers(headers), transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._http.close()

    def _call(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **self._request_kwargs(call))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(call, response)
        return call.decode(response)

    def _run(self, flow: _Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._call(call))
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            flow.close()

    # -- agents
    def register_agent(
        self,
        agent_id: str,
        capabilities: Sequence[str],
        model: str,
        *,
        max_concurrent_tasks: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentInfo:
        """Create or update an agent; tasks still leased to the same id go back to the queue."""
        return self._call(
            _Api.register_agent(agent_id, capabilities, model, max_concurrent_tasks, metadata)
        )

    def list_agents(
        self, capability: str | None = None, status: AgentStatus | str | None = None
    ) -> list[AgentInfo]:
        """Agents of the caller's workspace, optionally only those with a capability or status."""
        return self._call(_Api.list_agents(capability, status))

    def get_agent(self, agent_id: str) -> AgentInfo:
        """One agent; ``AgentNotFoundError`` when unknown."""
        return self._call(_Api.get_agent(agent_id))

    def heartbeat(self, agent_id: str, status: AgentStatus | str | None = None) -> HeartbeatResult:
        """Keep the agent alive; ``status="draining"`` stops new claims. Returns the agent and
        the ids of its running tasks that were cancelled since the last heartbeat."""
        return self._call(_Api.heartbeat(agent_id, status))

    def deregister_agent(self, agent_id: str) -> None:
        """Remove the agent; tasks it still holds go back to the queue."""
        self._call(_Api.deregister_agent(agent_id))

    # -- tasks
    def submit_task(
        self,
        task_type: str,
        payload: Any,
        required_capabilities: Sequence[str] = (),
        priority: TaskPriority | str = TaskPriority.NORMAL,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        cost_estimate: float | None = None,
    ) -> str:
        """Queue a task and return its id (the first task's id for a repeated idempotency key).

        ``timeout_s`` bounds one attempt and ``max_retries`` counts retries after the first
        attempt; both default to the server's configuration. ``cost_estimate`` is reserved
        against the workspace budget until the task ends.
        """
        return self._call(
            _Api.submit_task(
                task_type,
                payload,
                required_capabilities,
                priority,
                idempotency_key,
                timeout_s,
                max_retries,
                metadata,
                cost_estimate,
            )
        )

    def get_task(self, task_id: str, *, wait_s: float = 0.0) -> Task:
        """The task now, or once terminal when ``wait_s`` > 0 (a long poll of at most 60 s)."""
        return self._call(_Api.get_task(task_id, _long_poll_s(wait_s)))

    def list_tasks(
        self,
        status: TaskStatus | str | None = None,
        *,
        task_type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first; pass ``next_cursor`` back to continue."""
        return self._call(_Api.list_tasks(status, task_type, limit, cursor))

    def claim_task(self, agent_id: str, *, wait_s: float = 0.0) -> Task | None:
        """Lease the best task the agent may run, waiting up to ``wait_s`` (at most 60 s);
        None when no task came.

        The returned task carries the ``lease_token`` that ``complete_task`` and
        ``fail_task`` must present.
        """
        return self._call(_Api.claim_task(agent_id, _long_poll_s(wait_s)))

    def complete_task(
        self, task_id: str, result: Any, *, lease_token: str, cost: float | None = None
    ) -> Task:
        """Record the attempt's result; ``LeaseLostError`` if the lease is no longer valid."""
        return self._call(_Api.complete_task(task_id, result, lease_token, cost))

    def fail_task(
        self, task_id: str, error: str, *, lease_token: str, retryable: bool = True
    ) -> Task:
        """Record a failed attempt; retried unless ``retryable`` is False or retries ran out."""
        return self._call(_Api.fail_task(task_id, error, lease_token, retryable))

    def claim_tasks(self, agent_id: str, *, max_tasks: int, wait_s: float = 0.0) -> list[Task]:
        """Lease up to ``max_tasks`` (at most 100, never past the agent's free slots) of
        the best tasks in one request, waiting up to ``wait_s`` (at most 60 s) for one.
        A server without batch routes answers ``NotFoundError`` (not
        ``AgentNotFoundError``)."""
        try:
            return self._call(_Api.claim_tasks(agent_id, max_tasks, _long_poll_s(wait_s)))
        except AgentNotFoundError:
            raise AgentNotFoundError(agent_id) from None

    def complete_tasks(
        self, items: Sequence[tuple[str, Any, str, float | None]]
    ) -> list[Task | ControlPlaneError]:
        """Complete ``(task_id, result, lease_token, cost)`` items (at most 100) in one
        request. Each item is fenced by its own lease: each answer is the task or the
        error (``LeaseLostError``, ``TaskCancelledError``, ``TaskNotFoundError``) that
        refused that item alone."""
        return self._call(_Api.complete_tasks(items))

    def fail_tasks(
        self, items: Sequence[tuple[str, str, str, bool]]
    ) -> list[Task | ControlPlaneError]:
        """Fail ``(task_id, error, lease_token, retryable)`` items in one request; answered
        per item as in ``complete_tasks``."""
        return self._call(_Api.fail_tasks(items))

    def cancel_task(self, task_id: str) -> Task:
        """Cancel a pending or running task; ``InvalidStateError`` if it already finished."""
        return self._call(_Api.cancel_task(task_id))

    def retry_task(self, task_id: str) -> Task:
        """Queue a FAILED task again with a fresh allowance of retries."""
        return self._call(_Api.retry_task(task_id))

    def wait_for_task(self, task_id: str, timeout_s: float | None) -> Task:
        """The task once terminal, whatever its outcome; ``TimeoutError`` after ``timeout_s``
        (``None`` waits without limit). Long-polls in slices of at most 60 s."""
        return self._run(_wait_flow(task_id, timeout_s))

    def wait_for_result(self, task_id: str, timeout_s: float | None) -> Any:
        """The task's result; ``TaskFailedError``, ``TaskCancelledError`` or ``TimeoutError``
        otherwise, as ``ControlPlaneCoordinator.wait_for_result`` raises them."""
        return self._run(_result_flow(task_id, timeout_s))

    # -- health
    def health(self) -> ServerHealth:
        """The server's health report; a failing report is returned, not raised."""
        return self._call(_Api.health())

    def is_live(self) -> bool:
        """True when the server process answers ``/livez``."""
        return self._call(_Api.probe("/livez"))

    def is_ready(self) -> bool:
        """True when the server answers ``/readyz`` positively (its store is reachable)."""
        return self._call(_Api.probe("/readyz"))

    # -- workspaces (admin)
    def create_workspace(
        self,
        name: str,
        *,
        plan: str | None = None,
        quotas: Mapping[str, int | None] | None = None,
        budget: BudgetSettings | None = None,
    ) -> WorkspaceInfo:
        """Create a workspace with a plan (default ``standard``), quota overrides (field
        of ``WorkspaceQuotas`` to a limit, ``None`` for unlimited) and a budget.
        ``WorkspaceExistsError`` if the name is taken."""
        return self._call(_Api.create_workspace(name, plan, quotas, budget))

    def list_workspaces(self) -> list[WorkspaceInfo]:
        """Every workspace the caller may see."""
        return self._call(_Api.list_workspaces())

    def get_workspace(self, name: str) -> WorkspaceInfo:
        """One workspace; ``WorkspaceNotFoundError`` when unknown."""
        return self._call(_Api.get_workspace(name))

    def update_workspace(
        self,
        name: str,
        *,
        plan: str | None = None,
        quotas: Mapping[str, int | None] | None = None,
        budget: BudgetSettings | None = None,
        remove_budget: bool = False,
    ) -> WorkspaceInfo:
        """Change the plan, quota overrides (merged into earlier ones) or budget of a
        workspace, or remove its budget; what is not given stays as it is."""
        return self._call(_Api.update_workspace(name, plan, quotas, budget, remove_budget))

    # -- tokens (admin)
    def create_token(
        self,
        role: Role | str,
        *,
        workspace: str | None = None,
        expires_in_s: float | None = None,
    ) -> tuple[TokenInfo, str]:
        """Issue a token with ``role`` in ``workspace`` (default: the caller's); returns
        its info and its secret. The secret is shown this once and cannot be read
        again. ``expires_in_s`` ``None`` never expires. The info's ``created_at`` is 0
        unless the server's answer includes it (list the tokens to see it)."""
        return self._call(_Api.create_token(role, workspace, expires_in_s))

    def list_tokens(self, workspace: str | None = None) -> list[TokenInfo]:
        """Tokens of ``workspace`` (default: the caller's), revoked ones included."""
        return self._call(_Api.list_tokens(workspace))

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token at once on every server; idempotent. ``TokenNotFoundError``
        when unknown."""
        self._call(_Api.revoke_token(token_id))

    # -- access rules (admin)
    def list_policies(self) -> PolicySet:
        """The Cedar access rules of the caller's workspace and their version."""
        return self._call(_Api.list_policies())

    def put_policy(self, rule_id: str, text: str, *, description: str | None = None) -> Rule:
        """Create or replace a rule (Cedar text, usually ``forbid`` statements); the
        server refuses text that does not validate with ``ValidationError``."""
        return self._call(_Api.put_policy(rule_id, text, description))

    def delete_policy(self, rule_id: str) -> None:
        """Remove a rule; ``RuleNotFoundError`` when unknown."""
        self._call(_Api.delete_policy(rule_id))

    # -- budget and audit
    def get_budget(self) -> BudgetReport:
        """Spend, reservations and limits of the caller's workspace this period."""
        return self._call(_Api.get_budget())

    def audit_page(self, after_seq: int = 0, limit: int | None = None) -> AuditPage:
        """Audit events of the caller's workspace with ``seq > after_seq``, oldest first
        (at most ``limit``; the server's default when ``None``)."""
        return self._call(_Api.audit_page(after_seq, limit))

    def audit_verify(self) -> VerifyResult:
        """Have the server check the whole hash chain of the caller's workspace."""
        return self._call(_Api.audit_verify())

    def export_audit(self, out: TextSink, *, page_size: int = AUDIT_EXPORT_PAGE) -> int:
        """Write the caller's audit trail to ``out`` as JSON lines, the format of
        ``AuditLog.export`` that ``aragora.audit.verify_export`` checks; returns how
        many events were written."""
        return self._run(_audit_export_flow(out, page_size))


class AsyncControlPlaneClient(_ClientBase):
    """The asyncio twin of ``ControlPlaneClient``: same methods, awaited.

    Use with ``async with``, or call ``aclose()``.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers(headers), transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        await self._http.aclose()

    async def _call(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, **self._request_kwargs(call)
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(call, response)
        return call.decode(response)

    async def _run(self, flow: _Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._call(call))
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            flow.close()

    # -- agents
    async def register_agent(
        self,
        agent_id: str,
        capabilities: Sequence[str],
        model: str,
        *,
        max_concurrent_tasks: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentInfo:
        """See ``ControlPlaneClient.register_agent``."""
        return await self._call(
            _Api.register_agent(agent_id, capabilities, model, max_concurrent_tasks, metadata)
        )

    async def list_agents(
        self, capability: str | None = None, status: AgentStatus | str | None = None
    ) -> list[AgentInfo]:
        """See ``ControlPlaneClient.list_agents``."""
        return await self._call(_Api.list_agents(capability, status))

    async def get_agent(self, agent_id: str) -> AgentInfo:
        """See ``ControlPlaneClient.get_agent``."""
        return await self._call(_Api.get_agent(agent_id))

    async def heartbeat(
        self, agent_id: str, status: AgentStatus | str | None = None
    ) -> HeartbeatResult:
        """See ``ControlPlaneClient.heartbeat``."""
        return await self._call(_Api.heartbeat(agent_id, status))

    async def deregister_agent(self, agent_id: str) -> None:
        """See ``ControlPlaneClient.deregister_agent``."""
        await self._call(_Api.deregister_agent(agent_id))

    # -- tasks
    async def submit_task(
        self,
        task_type: str,
        payload: Any,
        required_capabilities: Sequence[str] = (),
        priority: TaskPriority | str = TaskPriority.NORMAL,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        cost_estimate: float | None = None,
    ) -> str:
        """See ``ControlPlaneClient.submit_task``."""
        return await self._call(
            _Api.submit_task(
                task_type,
                payload,
                required_capabilities,
                priority,
                idempotency_key,
                timeout_s,
                max_retries,
                metadata,
                cost_estimate,
            )
        )

    async def get_task(self, task_id: str, *, wait_s: float = 0.0) -> Task:
        """See ``ControlPlaneClient.get_task``."""
        return await self._call(_Api.get_task(task_id, _long_poll_s(wait_s)))

    async def list_tasks(
        self,
        status: TaskStatus | str | None = None,
        *,
        task_type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """See ``ControlPlaneClient.list_tasks``."""
        return await self._call(_Api.list_tasks(status, task_type, limit, cursor))

    async def claim_task(self, agent_id: str, *, wait_s: float = 0.0) -> Task | None:
        """See ``ControlPlaneClient.claim_task``."""
        return await self._call(_Api.claim_task(agent_id, _long_poll_s(wait_s)))

    async def complete_task(
        self, task_id: str, result: Any, *, lease_token: str, cost: float | None = None
    ) -> Task:
        """See ``ControlPlaneClient.complete_task``."""
        return await self._call(_Api.complete_task(task_id, result, lease_token, cost))

    async def claim_tasks(
        self, agent_id: str, *, max_tasks: int, wait_s: float = 0.0
    ) -> list[Task]:
        """See ``ControlPlaneClient.claim_tasks``."""
        try:
            return await self._call(_Api.claim_tasks(agent_id, max_tasks, _long_poll_s(wait_s)))
        except AgentNotFoundError:
            raise AgentNotFoundError(agent_id) from None

    async def complete_tasks(
        self, items: Sequence[tuple[str, Any, str, float | None]]
    ) -> list[Task | ControlPlaneError]:
        """See ``ControlPlaneClient.complete_tasks``."""
        return await self._call(_Api.complete_tasks(items))

    async def fail_tasks(
        self, items: Sequence[tuple[str, str, str, bool]]
    ) -> list[Task | ControlPlaneError]:
        """See ``ControlPlaneClient.fail_tasks``."""
        return await self._call(_Api.fail_tasks(items))

    async def fail_task(
        self, task_id: str, error: str, *, lease_token: str, retryable: bool = True
    ) -> Task:
        """See ``ControlPlaneClient.fail_task``."""
        return await self._call(_Api.fail_task(task_id, error, lease_token, retryable))

    async def cancel_task(self, task_id: str) -> Task:
        """See ``ControlPlaneClient.cancel_task``."""
        return await self._call(_Api.cancel_task(task_id))

    async def retry_task(self, task_id: str) -> Task:
        """See ``ControlPlaneClient.retry_task``."""
        return await self._call(_Api.retry_task(task_id))

    async def wait_for_task(self, task_id: str, timeout_s: float | None) -> Task:
        """See ``ControlPlaneClient.wait_for_task``."""
        return await self._run(_wait_flow(task_id, timeout_s))

    async def wait_for_result(self, task_id: str, timeout_s: float | None) -> Any:
        """See ``ControlPlaneClient.wait_for_result``."""
        return await self._run(_result_flow(task_id, timeout_s))

    # -- health
    async def health(self) -> ServerHealth:
        """See ``ControlPlaneClient.health``."""
        return await self._call(_Api.health())

    async def is_live(self) -> bool:
        """See ``ControlPlaneClient.is_live``."""
        return await self._call(_Api.probe("/livez"))

    async def is_ready(self) -> bool:
        """See ``ControlPlaneClient.is_ready``."""
        return await self._call(_Api.probe("/readyz"))

    # -- workspaces (admin)
    async def create_workspace(
        self,
        name: str,
        *,
        plan: str | None = None,
        quotas: Mapping[str, int | None] | None = None,
        budget: BudgetSettings | None = None,
    ) -> WorkspaceInfo:
        """See ``ControlPlaneClient.create_workspace``."""
        return await self._call(_Api.create_workspace(name, plan, quotas, budget))

    async def list_workspaces(self) -> list[WorkspaceInfo]:
        """See ``ControlPlaneClient.list_workspaces``."""
        return await self._call(_Api.list_workspaces())

    async def get_workspace(self, name: str) -> WorkspaceInfo:
        """See ``ControlPlaneClient.get_workspace``."""
        return await self._call(_Api.get_workspace(name))

    async def update_workspace(
        self,
        name: str,
        *,
        plan: str | None = None,
        quotas: Mapping[str, int | None] | None = None,
        budget: BudgetSettings | None = None,
        remove_budget: bool = False,
    ) -> WorkspaceInfo:
        """See ``ControlPlaneClient.update_workspace``."""
        return await self._call(_Api.update_workspace(name, plan, quotas, budget, remove_budget))

    # -- tokens (admin)
    async def create_token(
        self,
        role: Role | str,
        *,
        workspace: str | None = None,
        expires_in_s: float | None = None,
    ) -> tuple[TokenInfo, str]:
        """See ``ControlPlaneClient.create_token``."""
        return await self._call(_Api.create_token(role, workspace, expires_in_s))

    async def list_tokens(self, workspace: str | None = None) -> list[TokenInfo]:
        """See ``ControlPlaneClient.list_tokens``."""
        return await self._call(_Api.list_tokens(workspace))

    async def revoke_token(self, token_id: str) -> None:
        """See ``ControlPlaneClient.revoke_token``."""
        await self._call(_Api.revoke_token(token_id))

    # -- access rules (admin)
    async def list_policies(self) -> PolicySet:
        """See ``ControlPlaneClient.list_policies``."""
        return await self._call(_Api.list_policies())

    async def put_policy(self, rule_id: str, text: str, *, description: str | None = None) -> Rule:
        """See ``ControlPlaneClient.put_policy``."""
        return await self._call(_Api.put_policy(rule_id, text, description))

    async def delete_policy(self, rule_id: str) -> None:
        """See ``ControlPlaneClient.delete_policy``."""
        await self._call(_Api.delete_policy(rule_id))

    # -- budget and audit
    async def get_budget(self) -> BudgetReport:
        """See ``ControlPlaneClient.get_budget``."""
        return await self._call(_Api.get_budget())

    async def audit_page(self, after_seq: int = 0, limit: int | None = None) -> AuditPage:
        """See ``ControlPlaneClient.audit_page``."""
        return await self._call(_Api.audit_page(after_seq, limit))

    async def audit_verify(self) -> VerifyResult:
        """See ``ControlPlaneClient.audit_verify``."""
        return await self._call(_Api.audit_verify())

    async def export_audit(self, out: TextSink, *, page_size: int = AUDIT_EXPORT_PAGE) -> int:
        """See ``ControlPlaneClient.export_audit``."""
        return await self._run(_audit_export_flow(out, page_size))
