"""HTTP clients of the control plane: ``ControlPlaneClient`` (sync) and ``AsyncControlPlaneClient``.

Both speak the JSON API under ``/api/control-plane`` and return the library's own
models (``Task``, ``AgentInfo``, ``HeartbeatResult``), so code written against the
in-process ``ControlPlaneCoordinator`` reads the same over HTTP::

    with ControlPlaneClient() as cp:                      # ARAGORA_URL / ARAGORA_TOKEN
        task_id = cp.submit_task("debate", {"topic": "x"}, ["debate"], priority="high")
        result = cp.wait_for_result(task_id, timeout_s=120)

Errors. Problem responses (RFC 9457 ``application/problem+json``) are mapped onto the
library's exception tree in ``aragora.control_plane.errors``, so ``except
TaskNotFoundError`` works the same in-process and over HTTP. Failures that only a
remote caller can meet get their own classes here::

    ControlPlaneError                      (aragora.control_plane.errors)
    ├── ... the library's errors: 400/413/422 ValidationError, 404 *NotFoundError,
    │       409 LeaseLostError / TaskCancelledError / InvalidStateError,
    │       402 BudgetExceededError, 403 quota-exceeded QuotaExceededError,
    │       503 StoreUnavailableError
    ├── ServerUnreachableError   no answer: connection refused, reset, or timed out
    ├── AuthenticationError      401/403: missing, wrong or insufficient token
    └── ServerError              any other unexpected answer (e.g. a 500)

Design. Each API call is described once, as a ``_Call`` (method, path, body and how to
decode the answer); multi-step operations such as ``wait_for_task`` are generators that
yield calls and receive decoded answers. The sync and async clients only differ in the
few lines that send a call, so they cannot drift apart.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx

from aragora import __version__
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
    HeartbeatResult,
    Task,
    TaskPriority,
    TaskStatus,
)
from aragora.control_plane.serialization import agent_from_dict, task_from_dict
from aragora.store.base import TaskPage

__all__ = [
    "DEFAULT_URL",
    "MAX_WAIT_SLICE_S",
    "AsyncControlPlaneClient",
    "AuthenticationError",
    "ControlPlaneClient",
    "ServerError",
    "ServerHealth",
    "ServerUnreachableError",
    "error_from_response",
    "resolve_token",
    "resolve_url",
    "task_outcome",
]

DEFAULT_URL = "http://127.0.0.1:8080"
"""Where the clients look for the server when neither an argument nor ARAGORA_URL says."""

API_PREFIX = "/api/control-plane"
MAX_WAIT_SLICE_S = 60.0
"""The server caps one long-poll at 60 s; longer waits are made of several slices."""

DEFAULT_REQUEST_TIMEOUT_S = 30.0

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
    """The server refused the credentials (401: missing or wrong token, 403: not allowed)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ServerError(ControlPlaneError):
    """An answer the API does not document for this call, such as a 500."""

    def __init__(self, status: int, detail: str, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"server answered {status}: {detail}")
        self.status = status
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})


# -- settings ----------------------------------------------------------------------
def resolve_url(url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The server URL: the argument, else ARAGORA_URL, else ``DEFAULT_URL``; no trailing '/'."""
    env = os.environ if environ is None else environ
    value = url or env.get("ARAGORA_URL") or DEFAULT_URL
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"server URL must start with http:// or https://, got {value!r}")
    return value.rstrip("/")


def resolve_token(token: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: the argument, else ARAGORA_TOKEN, else none (an open server)."""
    env = os.environ if environ is None else environ
    return token or env.get("ARAGORA_TOKEN") or None


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


# -- calls: one description per route, shared by both clients ----------------------
_NO_BODY: Any = object()
ConflictKind = Literal["lease", "state", "generic"]


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
) -> ControlPlaneError:
    """The library exception for an error answer of the API.

    ``task_id`` / ``agent_id`` name the object the request was about, so a 404 can say
    which; ``conflict`` says what a 409 means for this route when the problem type is
    not specific (``lease`` for complete/fail, ``state`` for cancel/retry).
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
    if status in (401, 403):
        return AuthenticationError(status, detail)
    if status == 404:
        if name == "agent-not-found" or (not name and task_id is None and agent_id is not None):
            return AgentNotFoundError(agent_id or "?")
        if name == "task-not-found" or (not name and task_id is not None):
            return TaskNotFoundError(task_id or "?")
        return NotFoundError(detail)
    if status == 409:
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


def _problem_number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _raise_for(call: _Call[Any], response: httpx.Response) -> None:
    if response.status_code not in call.accept:
        raise error_from_response(
            response, task_id=call.task_id, agent_id=call.agent_id, conflict=call.conflict
        )


# -- the clients -------------------------------------------------------------------
class _ClientBase:
    """Settings and request building shared by the sync and async clients."""

    def __init__(self, url: str | None, token: str | None, timeout_s: float) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
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

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachableError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException) and "timed out" not in reason:
            reason = f"timed out ({reason})"
        return ServerUnreachableError(self.url, reason)


class ControlPlaneClient(_ClientBase):
    """Blocking client of the control plane's HTTP API (one method per route).

    ``url`` and ``token`` default to ARAGORA_URL (else ``http://127.0.0.1:8080``) and
    ARAGORA_TOKEN. ``timeout_s`` bounds every request; long polls add their wait to it.
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
        _raise_for(call, response)
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
        _raise_for(call, response)
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
