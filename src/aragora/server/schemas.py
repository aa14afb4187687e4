"""Request and response models of the HTTP API.

Request models are strict (JSON types must match; ``"3"`` is not an integer) and
forbid unknown fields, so a typo is an error rather than a silently ignored option.
They check shape and bounds; the coordinator stays the authority on the rules of the
domain and its ``ValidationError`` reaches the client as the same kind of problem.

Response models describe the JSON of :mod:`aragora.control_plane.serialization` for
the OpenAPI document; handlers return that JSON as is, and the tests check that the
two agree.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from aragora.control_plane.models import MAX_CAPABILITIES, MAX_TASK_TYPE_LENGTH

# Mirrors aragora.control_plane.models.validate_name; the coordinator checks it again.
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
MAX_NAME_LENGTH: Final = MAX_TASK_TYPE_LENGTH
"""Agent ids, task types and capabilities are names: 1-128 of the characters above."""
MAX_WAIT_S: Final = 60.0
"""Longest long-poll a request may ask for: below common proxy idle timeouts."""
MAX_TASK_ID_LENGTH: Final = 128
MAX_LEASE_TOKEN_LENGTH: Final = 128
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 256
MAX_MODEL_LENGTH: Final = 256
MAX_CONCURRENT_TASKS: Final = 1024
MAX_RETRIES: Final = 100
MAX_TIMEOUT_S: Final = 7 * 86_400.0
MAX_LIST_LIMIT: Final = 1000
MAX_CURSOR_LENGTH: Final = 1024
MAX_COST: Final = 1e15
"""Largest cost (estimate, reported cost or budget) one request may state: far above
any real cost, and far enough below the largest float that sums of costs stay finite
(a sum that overflowed would be stored as infinity, which no JSON answer can carry)."""
MAX_JSON_DEPTH: Final = 100
"""Deepest nesting of arrays and objects in a payload, result or metadata.

Far deeper than any real task needs, and far from the recursion limits that JSON
encoding in the coordinator and the stores would otherwise hit."""
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_.:=-]+$"
"""Cursors are opaque tokens of the store; they never hold other characters."""

PriorityName = Literal["critical", "high", "normal", "low"]
TaskStatusName = Literal["pending", "running", "completed", "failed", "cancelled"]
AgentStatusName = Literal["idle", "busy", "draining", "offline"]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _integral(value: object) -> object:
    """``3.0`` as the integer 3: JSON has one number type, and JSON Schema (hence the
    OpenAPI document) calls a number without a fraction an integer. ``3.5``, ``"3"``
    and ``true`` stay what they are, and strict validation refuses them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _limit_depth(value: Any) -> Any:
    """Reject JSON nested deeper than MAX_JSON_DEPTH, without recursing."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return value


def _check_json(value: Any) -> Any:
    """Nesting within MAX_JSON_DEPTH, and every string (key or value) valid Unicode.

    A JSON escape such as ``"\\ud800"`` decodes to a lone surrogate, which no UTF-8
    answer could carry back; such strings are refused here.
    """
    if isinstance(value, dict | list):
        _limit_depth(value)
    if isinstance(value, dict | list | str):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("holds a string that is not valid Unicode (lone surrogate)") from None
    return value


JsonValue = Annotated[Any, AfterValidator(_check_json)]
"""Any JSON value: nested at most MAX_JSON_DEPTH levels, strings valid Unicode."""
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
Text = Annotated[str, AfterValidator(_check_json)]
"""Free text (an error message): any length the body allows, valid Unicode."""

IntegralValue = BeforeValidator(_integral)
"""Annotation of an integer field: ``3`` or ``3.0``, never ``3.5``, ``"3"`` or ``true``.

Place it after the field's ``Field(...)`` bounds: placed before them, pydantic writes the
bounds into the JSON schema as ``ge``/``le`` instead of ``minimum``/``maximum``."""

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)]
Priority = Annotated[PriorityName, BeforeValidator(_lower)]
"""A priority name in any case (``"HIGH"`` is ``"high"``)."""
WaitSeconds = Annotated[float, Field(ge=0, le=MAX_WAIT_S, allow_inf_nan=False)]
Cost = Annotated[float, Field(ge=0, le=MAX_COST, allow_inf_nan=False)]
"""A cost in the workspace's budget unit: 0 to :data:`MAX_COST`."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterAgentRequest(_Request):
    """Register an agent (or update it: tasks it still held go back to the queue)."""

    agent_id: Name
    capabilities: Annotated[list[Name], Field(max_length=MAX_CAPABILITIES)]
    model: Annotated[str, Field(min_length=1, max_length=MAX_MODEL_LENGTH)]
    max_concurrent_tasks: Annotated[int, Field(ge=1, le=MAX_CONCURRENT_TASKS), IntegralValue] = 1
    metadata: JsonObject | None = None


class HeartbeatRequest(_Request):
    """``draining`` stops new claims; ``idle`` or ``busy`` resumes them; absent keeps it."""

    status: Literal["idle", "busy", "draining"] | None = None


class SubmitTaskRequest(_Request):
    """Queue a task. A repeated ``idempotency_key`` returns the task it first created.

    ``cost_estimate`` is reserved against the workspace budget until the task ends.
    """

    task_type: Name
    payload: JsonValue
    required_capabilities: Annotated[list[Name], Field(max_length=MAX_CAPABILITIES)] = []
    priority: Priority = "normal"
    idempotency_key: Annotated[
        str | None, Field(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH)
    ] = None
    timeout_s: Annotated[float | None, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)] = None
    max_retries: Annotated[int | None, Field(ge=0, le=MAX_RETRIES), IntegralValue] = None
    metadata: JsonObject | None = None
    cost_estimate: Cost | None = None


class ClaimRequest(_Request):
    """Lease the best task for the agent, waiting up to ``wait_s`` for one."""

    agent_id: Name
    wait_s: WaitSeconds = 0.0


class CompleteRequest(_Request):
    """End the attempt with a result; the lease token proves the attempt is the caller's."""

    lease_token: Annotated[str, Field(min_length=1, max_length=MAX_LEASE_TOKEN_LENGTH)]
    result: JsonValue
    cost: Cost | None = None


class FailRequest(_Request):
    """End the attempt with an error; ``retryable=false`` fails the task for good."""

    lease_token: Annotated[str, Field(min_length=1, max_length=MAX_LEASE_TOKEN_LENGTH)]
    error: Text
    retryable: bool = True


# -- responses (documentation of serialization.py's JSON) ---------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttemptErrorOut(_Response):
    attempt: int
    error: str
    agent_id: str | None
    at: float


class TaskOut(_Response):
    """A task; ``lease_token`` is only set in the answer to the claim that leased it."""

    id: str
    task_type: str
    payload: Any
    priority: PriorityName
    status: TaskStatusName
    required_capabilities: list[str]
    workspace_id: str
    attempt: int
    max_retries: int
    timeout_s: float
    lease_token: str | None
    agent_id: str | None
    result: Any
    error: str | None
    errors: list[AttemptErrorOut]
    created_at: float
    started_at: float | None
    finished_at: float | None
    lease_expires_at: float | None
    available_at: float | None
    idempotency_key: str | None
    metadata: dict[str, Any]
    cost: float | None
    cost_estimate: float | None


class AgentOut(_Response):
    agent_id: str
    workspace_id: str
    capabilities: list[str]
    model: str
    status: AgentStatusName
    max_concurrent_tasks: int
    running_task_ids: list[str]
    registered_at: float
    last_heartbeat_at: float
    metadata: dict[str, Any]


class AgentListOut(_Response):
    agents: list[AgentOut]


class HeartbeatOut(_Response):
    """The agent, and its tasks cancelled while it ran them: stop working on those."""

    agent: AgentOut
    cancelled_task_ids: list[str]


class SubmitTaskOut(_Response):
    task_id: str
    status: TaskStatusName


class TaskListOut(_Response):
    """Newest first; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    tasks: list[TaskOut]
    next_cursor: str | None


class HealthCheckOut(BaseModel):
    """One measurement of a component (draft "application/health+json")."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    status: Literal["pass", "warn", "fail"]
    component_id: str | None = Field(default=None, alias="componentId")
    component_type: str | None = Field(default=None, alias="componentType")
    observed_value: float | None = Field(default=None, alias="observedValue")
    observed_unit: str | None = Field(default=None, alias="observedUnit")
    time: str | None = None
    output: str | None = None
    details: dict[str, Any] | None = None


class HealthOut(_Response):
    """Overall status (the worst of the checks) and the checks by component."""

    status: Literal["pass", "warn", "fail"]
    description: str
    checks: dict[str, list[HealthCheckOut]]


class AgentHealthOut(_Response):
    """One agent's health: ``fail`` while it is offline or its breaker is open, ``warn``
    while it drains, its breaker is half-open or its last heartbeat is late."""

    status: Literal["pass", "warn", "fail"]
    agent_id: str
    agent_status: Literal["idle", "busy", "draining", "offline"]
    breaker_state: Literal["closed", "open", "half_open"]
    error_rate: float
    calls_in_window: int
    failures_in_window: int
    last_heartbeat_at: float
    last_heartbeat_age_s: float
    running_tasks: int


class FieldErrorOut(_Response):
    field: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details; validation problems add ``field`` and ``errors``;
    refusals ``reason`` and ``rule_ids``; rate limits ``quota``, ``limit``, ``scope`` and
    ``retry_after_s`` (see :mod:`aragora.server.problems`)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[FieldErrorOut] | None = None
    size_bytes: int | None = None
    limit_bytes: int | None = None
    quota: str | None = None
    limit: float | None = None
    current: float | None = None
    used: float | None = None
    estimate: float | None = None
    reason: str | None = None
    rule_ids: list[str] | None = None
    scope: str | None = None
    retry_after_s: float | None = None
