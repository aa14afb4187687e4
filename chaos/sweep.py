"""Bad-input sweep against a real ``aragora serve``: ``python -m chaos.sweep --help``.

Sends every kind of bad input a client can produce (malformed JSON, wrong types, bodies
over the limit, deep nesting, invalid UTF-8, enormous headers, slowloris connections,
hundreds of concurrent long-polls) over real sockets, and checks that each one gets a
clear 4xx (problem+json naming the field and the reason, where the app can answer) or
is cut off cleanly. Meanwhile a probe thread reads a task in a loop with its own
connection; the sweep reports the probe's latency before the sweep (baseline) and
during it, and exits non-zero when any request got a 5xx, any expectation failed, or
any probe failed.

Without ``--url`` it starts its own server (SQLite in a temporary directory, or
``--store``) with short read deadlines so that the slowloris kinds finish quickly;
against ``--url`` pass the server's deadlines (``--header-timeout-s`` and
``--body-timeout-s``) so the sweep knows when a slow connection must have been cut.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aragora.control_plane.config import ControlPlaneConfig
from aragora.server.middleware.body_limit import request_body_limit_bytes
from aragora.server.middleware.http_limits import DEFAULT_MAX_HEAD_BYTES
from aragora.server.schemas import MAX_JSON_DEPTH

API = "/api/control-plane"
PROBLEM_JSON = "application/problem+json"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 5.0
PROBE_INTERVAL_S = 0.02
BASELINE_PROBES = 100
SPAWNED_HEADER_TIMEOUT_S = 2.0
SPAWNED_BODY_TIMEOUT_S = 3.0
CUT_SLACK_S = 2.0
"""How much later than its deadline a slow connection may be cut (timer and scheduling)."""
DEFAULT_BODY_LIMIT_BYTES = request_body_limit_bytes(ControlPlaneConfig())
DEEP_NESTING_LEVELS = 10_000
REDIS_POOL_MAX_CONNECTIONS = ControlPlaneConfig().redis_max_connections
REDIS_EXTRA_CONNECTIONS = 4
LONG_POLL_SLACK_S = 10.0
"""How much longer than their wait_s a batch of long-polls may take (connection setup)."""
"""Connections a server keeps besides its pool: the notification subscription."""


# -- results -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one bad request got, and whether that is what the server must answer."""

    kind: str
    case: str
    expected: str
    status: int | None = None
    """HTTP status, or None when the server closed the connection without an answer."""
    closed: bool = False
    elapsed_ms: float = 0.0
    problem: dict[str, Any] | None = None
    ok: bool = False
    detail: str = ""
    summary: str | None = None
    """What was got, for an outcome that stands for many requests."""

    @property
    def server_error(self) -> bool:
        return self.status is not None and self.status >= 500

    @property
    def got(self) -> str:
        if self.summary is not None:
            return self.summary
        if self.status is None:
            return "closed" if self.closed else "no answer"
        answer = str(self.status)
        if self.problem is not None:
            answer += f" {str(self.problem.get('type', '')).rsplit(':', 1)[-1]}"
            if "field" in self.problem:
                answer += f" [{self.problem['field']}]"
        return answer


@dataclass(frozen=True)
class Expect:
    """An acceptable answer: one of ``statuses`` (as problem+json of ``problem_type``,
    naming ``field``, when given), or a closed connection when ``or_closed``."""

    statuses: frozenset[int]
    problem_type: str | None = None
    field: str | None = None
    or_closed: bool = False

    def describe(self) -> str:
        text = "/".join(str(s) for s in sorted(self.statuses))
        if self.problem_type:
            text += f" {self.problem_type}"
        if self.field:
            text += f" [{self.field}]"
        if self.or_closed:
            text += " or closed"
        return text

    def judge(self, outcome: Outcome) -> Outcome:
        outcome.expected = self.describe()
        if outcome.status is None:
            outcome.ok = self.or_closed and outcome.closed
            return outcome
        if outcome.status not in self.statuses:
            outcome.ok = False
            return outcome
        if self.problem_type is not None:
            problem = outcome.problem or {}
            if not str(problem.get("type", "")).endswith(self.problem_type):
                outcome.detail = f"problem type {problem.get('type')!r}"
                outcome.ok = False
                return outcome
            if not (problem.get("title") and problem.get("detail")):
                outcome.detail = "problem without title or detail"
                outcome.ok = False
                return outcome
            if self.field is not None:
                fields = [e.get("field") for e in problem.get("errors", [])]
                if problem.get("field") != self.field or self.field not in fields:
                    outcome.detail = f"names {problem.get('field')!r}, not {self.field!r}"
                    outcome.ok = False
                    return outcome
                reasons = [e.get("reason") for e in problem.get("errors", [])]
                if not all(reasons):
                    outcome.detail = "a field error without a reason"
                    outcome.ok = False
                    return outcome
        outcome.ok = True
        return outcome


def expect(
    *statuses: int,
    problem_type: str | None = None,
    field: str | None = None,
    or_closed: bool = False,
) -> Expect:
    return Expect(frozenset(statuses), problem_type, field, or_closed)


# -- the server under test -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A running server: its URL, an admin token of workspace ``default``, the
    deadlines it cuts slow clients at, its body limit, and its pid when known."""

    url: str
    token: str
    header_timeout_s: float
    body_timeout_s: float
    body_limit_bytes: int = DEFAULT_BODY_LIMIT_BYTES
    pid: int | None = None
    redis_port: int | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        parsed = httpx.URL(self.url)
        return parsed.host, parsed.port or 80

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def spawned_server(
    *,
    store: str | None = None,
    header_timeout_s: float = SPAWNED_HEADER_TIMEOUT_S,
    body_timeout_s: float = SPAWNED_BODY_TIMEOUT_S,
    key_prefix: str | None = None,
    log_path: Path | None = None,
) -> Iterator[Target]:
    """Run ``aragora serve`` on a free port (SQLite in a temporary directory unless
    ``store`` is given) with these read deadlines; stop it with SIGTERM on exit.

    On Redis without ``key_prefix`` the server gets a key prefix of its own, whose keys
    are deleted on exit; with ``key_prefix`` the caller owns them."""
    token = f"sweep-{uuid.uuid4().hex}"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="aragora-sweep-") as tmp:
        data_dir = Path(tmp) / "data"
        args = [sys.executable, "-m", "aragora.cli", "serve", "--port", str(port)]
        args += ["--data-dir", str(data_dir), "--log-level", "warning"]
        if store is not None:
            args += ["--store", store]
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("ARAGORA_REDIS_URL", "ARAGORA_STORE_URL", "ARAGORA_DATA_DIR")
        }
        env.update(
            ARAGORA_ADMIN_TOKEN=token,
            ARAGORA_SECRET_KEY=base64.b64encode(os.urandom(32)).decode("ascii"),
            ARAGORA_HTTP_HEADER_TIMEOUT_S=str(header_timeout_s),
            ARAGORA_HTTP_BODY_TIMEOUT_S=str(body_timeout_s),
            ARAGORA_LOG_LEVEL="warning",
        )
        own_prefix = key_prefix is None and store is not None and "redis" in store
        if own_prefix:
            key_prefix = f"aragora:sweep:{uuid.uuid4().hex[:12]}:"
        if key_prefix is not None:
            env["ARAGORA_KEY_PREFIX"] = key_prefix
        log = (log_path or Path(tmp) / "server.log").open("w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, proc, log.name)
            redis_port = None
            if store is not None and store.startswith("redis://"):
                redis_port = httpx.URL(store).port or 6379
            yield Target(
                url,
                token,
                header_timeout_s,
                body_timeout_s,
                pid=proc.pid,
                redis_port=redis_port,
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
            log.close()
            if own_prefix and store is not None and key_prefix is not None:
                _delete_keys(store, key_prefix)


def _delete_keys(store_url: str, prefix: str) -> None:
    """Remove what a started server left under its own key prefix."""
    import redis

    if "+cluster" in store_url:
        return  # a cluster keeps the keys; the prefix is unique to this run
    client = redis.Redis.from_url(store_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; log: {log_name}")
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{url}/readyz").status_code == 200:
                    return
            time.sleep(0.05)  # noqa: sleep-ok (waiting for a child process to listen)
    raise RuntimeError(f"server not ready within {START_TIMEOUT_S}s; log: {log_name}")


# -- the probe -----------------------------------------------------------------------


@dataclass
class LatencySummary:
    count: int
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def summarize(latencies_s: Sequence[float], failures: int) -> LatencySummary:
    if not latencies_s:
        return LatencySummary(0, failures, None, None, None)
    ordered = sorted(latencies_s)
    if len(ordered) >= 2:
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    else:
        p50 = p99 = ordered[0]
    return LatencySummary(
        len(ordered),
        failures,
        round(p50 * 1e3, 2),
        round(p99 * 1e3, 2),
        round(ordered[-1] * 1e3, 2),
    )


class Probe:
    """Reads one task in a loop from a thread of its own, on its own connection, and
    keeps every latency; a non-200 answer or a transport error counts as a failure."""

    def __init__(self, target: Target, task_id: str) -> None:
        self._url = f"{target.url}{API}/tasks/{task_id}"
        self._headers = target.auth_header
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latencies_s: list[float] = []
        self.failures: list[str] = []

    def sample(self, count: int) -> LatencySummary:
        """``count`` probes in a row, now (the baseline)."""
        latencies: list[float] = []
        failures: list[str] = []
        with httpx.Client(timeout=PROBE_TIMEOUT_S, headers=self._headers) as http:
            for _ in range(count):
                self._one(http, latencies, failures)
        return summarize(latencies, len(failures))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sweep-probe", daemon=True)
        self._thread.start()

    def stop(self) -> LatencySummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=PROBE_TIMEOUT_S * 2)
        return summarize(self.latencies_s, len(self.failures))

    def _loop(self) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, headers=self._headers) as http:
            while not self._stop.wait(PROBE_INTERVAL_S):
                self._one(http, self.latencies_s, self.failures)

    def _one(self, http: httpx.Client, latencies: list[float], failures: list[str]) -> None:
        started = time.perf_counter()
        try:
            response = http.get(self._url)
        except httpx.HTTPError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            failures.append(f"status {response.status_code}: {response.text[:200]}")


# -- raw HTTP ------------------------------------------------------------------------


@dataclass
class RawAnswer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    closed: bool
    elapsed_s: float


async def raw_exchange(
    target: Target,
    chunks: Sequence[bytes],
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
    gap_s: float = 0.0,
) -> RawAnswer:
    """Send ``chunks`` (``gap_s`` apart) on a fresh connection and read one answer.

    Stops sending once the server answered or closed. ``status`` is None when the
    connection closed (or ``timeout_s`` passed) before a status line arrived.
    """
    host, port = target.host_port
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    received = bytearray()
    closed = False

    async def read_answer() -> None:
        nonlocal closed
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                data = b""
            if not data:
                closed = True
                return
            received.extend(data)
            if _answer_complete(received):
                return

    reading = asyncio.ensure_future(read_answer())
    try:
        for index, chunk in enumerate(chunks):
            if reading.done():
                break
            if index and gap_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reading), gap_s)
                if reading.done():
                    break
            try:
                writer.write(chunk)
                await writer.drain()
            except (ConnectionError, OSError):
                break
        remaining_s = max(0.0, timeout_s - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(asyncio.shield(reading), remaining_s)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await reading
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    elapsed_s = time.monotonic() - started
    status, headers, body = _parse_answer(bytes(received))
    return RawAnswer(status, headers, body, closed, elapsed_s)


def _answer_complete(data: bytearray) -> bool:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    _, headers, _ = _parse_answer(bytes(data[: end + 4]))
    length = int(headers.get("content-length", "0") or 0)
    return len(data) >= end + 4 + length


def _parse_answer(data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    end = data.find(b"\r\n\r\n")
    if not data.startswith(b"HTTP/") or end < 0:
        return None, {}, b""
    head = data[:end].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return None, {}, b""
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, data[end + 4 :]


def _problem_of(content_type: str, body: bytes) -> dict[str, Any] | None:
    if not content_type.startswith(PROBLEM_JSON):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def raw_outcome(kind: str, case: str, answer: RawAnswer) -> Outcome:
    return Outcome(
        kind,
        case,
        "",
        status=answer.status,
        closed=answer.closed,
        elapsed_ms=round(answer.elapsed_s * 1e3, 1),
        problem=_problem_of(answer.headers.get("content-type", ""), answer.body),
    )


def request_bytes(
    target: Target,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    content_length: int | None = None,
) -> bytes:
    """An HTTP/1.1 request with the admin token, as bytes (nothing is validated)."""
    host, port = target.host_port
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: Bearer {target.token}",
    ]
    if body is not None or content_length is not None:
        lines.append("Content-Type: application/json")
        length = content_length if content_length is not None else len(body or b"")
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# -- the kinds of bad input ----------------------------------------------------------


async def _post_json(
    http: httpx.AsyncClient,
    kind: str,
    case: str,
    path: str,
    body: bytes,
    rule: Expect,
    content_type: str = "application/json",
) -> Outcome:
    started = time.monotonic()
    response = await http.post(f"{API}{path}", content=body, headers={"Content-Type": content_type})
    return _judge_response(kind, case, response, started, rule)


async def _get(
    http: httpx.AsyncClient, kind: str, case: str, path: str, rule: Expect, **params: str
) -> Outcome:
    started = time.monotonic()
    response = await http.get(f"{API}{path}", params=params)
    return _judge_response(kind, case, response, started, rule)


def _judge_response(
    kind: str, case: str, response: httpx.Response, started: float, rule: Expect
) -> Outcome:
    outcome = Outcome(
        kind,
        case,
        "",
        status=response.status_code,
        elapsed_ms=round((time.monotonic() - started) * 1e3, 1),
        problem=_problem_of(response.headers.get("content-type", ""), response.content),
    )
    return rule.judge(outcome)


def _client(target: Target, **kwargs: Any) -> httpx.AsyncClient:
    kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
    return httpx.AsyncClient(base_url=target.url, headers=target.auth_header, **kwargs)


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


async def malformed_json(target: Target, env: SweepEnv) -> list[Outcome]:
    """Bodies that are not JSON (or not sent as JSON): 400 (415) naming ``body``."""
    kind = "malformed-json"
    bad = expect(400, problem_type="malformed-json", field="body")
    cases = {
        "truncated object": b'{"task_type": "t", "payload": ',
        "trailing comma": b'{"task_type": "t", "payload": 1,}',
        "single quotes": b"{'task_type': 't', 'payload': 1}",
        "bare word": b"hello",
        "two documents": b'{"task_type": "t", "payload": 1} {}',
        "unterminated string": b'{"task_type": "t, "payload": 1}',
        "number too long": b'{"task_type": "t", "payload": ' + b"1" * 5000 + b"}",
    }
    async with _client(target) as http:
        outcomes = [
            await _post_json(http, kind, case, "/tasks/submit", body, bad)
            for case, body in cases.items()
        ]
        outcomes.append(
            await _post_json(
                http,
                kind,
                "text/plain body",
                "/tasks/submit",
                b'{"task_type": "t", "payload": 1}',
                expect(415, problem_type="unsupported-media-type", field="body"),
                content_type="text/plain",
            )
        )
        outcomes.append(
            await _post_json(
                http,
                kind,
                "NaN payload",
                "/tasks/submit",
                b'{"task_type": "t", "payload": NaN}',
                expect(422, problem_type="validation-error", field="payload"),
            )
        )
    return outcomes


async def wrong_types(target: Target, env: SweepEnv) -> list[Outcome]:
    """Well-formed JSON of the wrong shape: 422 naming the field."""
    kind = "wrong-types"

    def invalid(field: str) -> Expect:
        return expect(422, problem_type="validation-error", field=field)

    submits: list[tuple[str, object, str]] = [
        ("task_type is a number", {"task_type": 1, "payload": 1}, "task_type"),
        ("payload missing", {"task_type": "t"}, "payload"),
        ("priority unknown", {"task_type": "t", "payload": 1, "priority": "urgent"}, "priority"),
        ("timeout_s is a string", {"task_type": "t", "payload": 1, "timeout_s": "3"}, "timeout_s"),
        (
            "capabilities not a list",
            {"task_type": "t", "payload": 1, "required_capabilities": "debate"},
            "required_capabilities",
        ),
        (
            "max_retries a float",
            {"task_type": "t", "payload": 1, "max_retries": 1.5},
            "max_retries",
        ),
        ("unknown field", {"task_type": "t", "payload": 1, "priorty": "high"}, "priorty"),
        (
            "cost_estimate near the largest float",
            {"task_type": "t", "payload": 1, "cost_estimate": 1.5e308},
            "cost_estimate",
        ),
        ("body is an array", [{"task_type": "t", "payload": 1}], "body"),
        ("body is a string", "submit", "body"),
        ("task_type with spaces", {"task_type": "a b", "payload": 1}, "task_type"),
    ]
    async with _client(target) as http:
        outcomes = [
            await _post_json(
                http, kind, f"submit: {case}", "/tasks/submit", _dumps(body), invalid(f)
            )
            for case, body, f in submits
        ]
        claims: list[tuple[str, object, str]] = [
            ("wait_s is a string", {"agent_id": env.agent_id, "wait_s": "1"}, "wait_s"),
            ("wait_s over the maximum", {"agent_id": env.agent_id, "wait_s": 1e9}, "wait_s"),
            ("agent_id is null", {"agent_id": None}, "agent_id"),
        ]
        outcomes += [
            await _post_json(http, kind, f"claim: {case}", "/tasks/claim", _dumps(body), invalid(f))
            for case, body, f in claims
        ]
        outcomes.append(
            await _post_json(
                http,
                kind,
                "register: max_concurrent_tasks negative",
                "/agents/register",
                _dumps(
                    {"agent_id": "a", "capabilities": [], "model": "m", "max_concurrent_tasks": -1}
                ),
                invalid("max_concurrent_tasks"),
            )
        )
        outcomes.append(
            await _post_json(
                http,
                kind,
                "complete: result missing",
                f"/tasks/{env.task_id}/complete",
                _dumps({"lease_token": "x"}),
                invalid("result"),
            )
        )
        outcomes.append(
            await _get(
                http,
                kind,
                "get: wait_s not a number",
                f"/tasks/{env.task_id}",
                invalid("wait_s"),
                wait_s="soon",
            )
        )
        outcomes.append(
            await _get(
                http,
                kind,
                "get: wait_s is nan",
                f"/tasks/{env.task_id}",
                invalid("wait_s"),
                wait_s="nan",
            )
        )
        outcomes.append(
            await _get(http, kind, "list: limit 0", "/tasks", invalid("limit"), limit="0")
        )
        outcomes.append(
            await _get(
                http, kind, "list: status unknown", "/tasks", invalid("status"), status="done"
            )
        )
    return outcomes


async def huge_payloads(target: Target, env: SweepEnv) -> list[Outcome]:
    """Bodies over the server's body limit: 413 before the body is read."""
    kind = "huge-payloads"
    limit = target.body_limit_bytes
    too_large = expect(413, problem_type="payload-too-large")
    outcomes = []
    # Declared length over the limit, and not one byte of the body sent: the answer
    # must come anyway, so the server decided before reading.
    answer = await raw_exchange(
        target,
        [request_bytes(target, "POST", f"{API}/tasks/submit", content_length=64 * 1024 * 1024)],
        timeout_s=5.0,
    )
    outcomes.append(too_large.judge(raw_outcome(kind, "64 MiB declared, no body sent", answer)))
    # A chunked body (no length) crossing the limit while it streams in.
    head = request_bytes(
        target, "POST", f"{API}/tasks/submit", headers={"Transfer-Encoding": "chunked"}
    )
    chunk = b"a" * 65536
    chunks = [head] + [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (limit // len(chunk) + 4)
    answer = await raw_exchange(target, chunks, timeout_s=10.0)
    outcomes.append(too_large.judge(raw_outcome(kind, "chunked body over the limit", answer)))
    # A declared length over the limit with the body sent: the server answers 413 at
    # once and closes; a client still sending may see the close (a TCP reset) first.
    over = b'{"task_type": "t", "payload": "' + b"x" * limit + b'"}'
    answer = await raw_exchange(
        target,
        _pieces(request_bytes(target, "POST", f"{API}/tasks/submit", over), 65536),
        timeout_s=10.0,
    )
    outcomes.append(
        expect(413, problem_type="payload-too-large", or_closed=True).judge(
            raw_outcome(kind, "body over the limit, sent whole", answer)
        )
    )
    async with _client(target) as http:
        # Under the body limit, over max_payload_bytes: the payload field is named.
        payload = b'{"task_type": "t", "payload": "' + b"x" * (limit // 2) + b'"}'
        outcomes.append(
            await _post_json(
                http,
                kind,
                "payload over max_payload_bytes",
                "/tasks/submit",
                payload,
                expect(413, problem_type="payload-too-large", field="payload"),
            )
        )
    return outcomes


async def deep_nesting(target: Target, env: SweepEnv) -> list[Outcome]:
    """JSON nested far deeper than any task needs: 4xx, never a RecursionError."""
    kind = "deep-nesting"
    levels = DEEP_NESTING_LEVELS
    not_json = expect(400, problem_type="malformed-json", field="body")
    too_deep = expect(422, problem_type="validation-error", field="payload")
    cases = [
        (
            f"payload: {levels} nested arrays",
            b'{"task_type": "t", "payload": ' + b"[" * levels + b"]" * levels + b"}",
            expect(400, 422, field=None),
        ),
        (
            f"payload: {levels} nested objects",
            b'{"task_type": "t", "payload": ' + b'{"a":' * levels + b"1" + b"}" * levels + b"}",
            expect(400, 422, field=None),
        ),
        (f"body: {levels * 10} nested arrays", b"[" * levels * 10 + b"]" * levels * 10, not_json),
        (
            f"payload: {MAX_JSON_DEPTH + 1} levels (one too many)",
            b'{"task_type": "t", "payload": '
            + b"[" * (MAX_JSON_DEPTH + 1)
            + b"]" * (MAX_JSON_DEPTH + 1)
            + b"}",
            too_deep,
        ),
        (
            f"metadata: {MAX_JSON_DEPTH + 1} levels",
            b'{"task_type": "t", "payload": 1, "metadata": {"m": '
            + b"[" * MAX_JSON_DEPTH
            + b"]" * MAX_JSON_DEPTH
            + b"}}",
            expect(422, problem_type="validation-error", field="metadata"),
        ),
    ]
    async with _client(target) as http:
        outcomes = [
            await _post_json(http, kind, case, "/tasks/submit", body, rule)
            for case, body, rule in cases
        ]
        outcomes.append(
            await _post_json(
                http,
                kind,
                f"complete: result {levels} nested arrays",
                f"/tasks/{env.task_id}/complete",
                b'{"lease_token": "x", "result": ' + b"[" * levels + b"]" * levels + b"}",
                expect(400, 422),
            )
        )
    for outcome in outcomes:
        if outcome.ok and outcome.problem is not None and not outcome.problem.get("field"):
            outcome.ok, outcome.detail = False, "the problem names no field"
    return outcomes


async def invalid_utf8(target: Target, env: SweepEnv) -> list[Outcome]:
    """Bytes that are not UTF-8, in the body, the path and the headers."""
    kind = "invalid-utf8"
    not_json = expect(400, problem_type="malformed-json", field="body")
    bodies = [
        ("body: 0xff 0xfe in a string", b'{"task_type": "t", "payload": "\xff\xfe"}', not_json),
        ("body: overlong encoding", b'{"task_type": "t", "payload": "\xc0\xaf"}', not_json),
        ("body: truncated sequence", b'{"task_type": "t", "payload": "\xe2\x82"}', not_json),
        (
            "body: lone surrogate escape",
            b'{"task_type": "t", "payload": "\\ud800"}',
            expect(422, problem_type="validation-error", field="payload"),
        ),
        (
            "body: surrogate in a key",
            b'{"task_type": "t", "payload": {"\\udfff": 1}}',
            expect(422, problem_type="validation-error", field="payload"),
        ),
    ]
    async with _client(target) as http:
        outcomes = [
            await _post_json(http, kind, case, "/tasks/submit", body, rule)
            for case, body, rule in bodies
        ]
    raw_cases = [
        (
            "path: raw 0xff byte",
            request_bytes(target, "GET", "/x").replace(
                b"GET /x", b"GET " + API.encode() + b"/tasks/\xff"
            ),
            expect(400, 404, or_closed=True),
        ),
        (
            "path: percent-encoded 0xff",
            request_bytes(target, "GET", f"{API}/tasks/%ff%fe"),
            expect(404, problem_type="task-not-found"),
        ),
        (
            "header: token not UTF-8",
            request_bytes(target, "GET", f"{API}/tasks").replace(
                f"Bearer {target.token}".encode(), b"Bearer \xff\xfe"
            ),
            expect(401, problem_type="unauthorized"),
        ),
        (
            "header: workspace not UTF-8",
            request_bytes(target, "GET", f"{API}/tasks", headers={"X-Workspace-ID": "\xff\xfe"}),
            expect(400, 403, 422),
        ),
    ]
    for case, data, rule in raw_cases:
        answer = await raw_exchange(target, [data], timeout_s=5.0)
        outcomes.append(rule.judge(raw_outcome(kind, case, answer)))
    return outcomes


async def enormous_headers(target: Target, env: SweepEnv) -> list[Outcome]:
    """Heads over the server's head limit: 431 (400 from h11) or a clean close."""
    kind = "enormous-headers"
    refused = expect(431, 400, or_closed=True)
    over = DEFAULT_MAX_HEAD_BYTES * 2
    cases = [
        (
            "one header of 64 KiB",
            [request_bytes(target, "GET", f"{API}/tasks", headers={"X-Big": "a" * over})],
        ),
        (
            "4000 headers",
            [
                request_bytes(
                    target, "GET", f"{API}/tasks", headers={f"X-H{i}": "v" for i in range(4000)}
                )
            ],
        ),
        ("URL of 64 KiB", [request_bytes(target, "GET", f"{API}/tasks/" + "a" * over)]),
        (
            "head in 8 KiB pieces",
            _pieces(
                request_bytes(target, "GET", f"{API}/tasks", headers={"X-Big": "a" * over}), 8192
            ),
        ),
        (
            "1 MiB header",
            [request_bytes(target, "GET", f"{API}/tasks", headers={"X-Big": "a" * 2**20})],
        ),
    ]
    outcomes = []
    for case, chunks in cases:
        answer = await raw_exchange(target, chunks, timeout_s=10.0)
        outcomes.append(refused.judge(raw_outcome(kind, case, answer)))
    return outcomes


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def slowloris(target: Target, env: SweepEnv) -> list[Outcome]:
    """Connections that send their head (or body) a byte at a time: each is cut at
    its deadline, with 408 or a close, while the probe keeps being served."""
    kind = "slowloris"
    interval_s = env.slow_interval_s
    head_deadline_s = target.header_timeout_s + CUT_SLACK_S
    body_deadline_s = target.body_timeout_s + CUT_SLACK_S
    # Enough bytes to outlast the deadline many times over.
    head_bytes = int(head_deadline_s * 4 / interval_s) + 8
    body_bytes = int(body_deadline_s * 4 / interval_s) + 8

    async def slow_head() -> RawAnswer:
        data = b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * head_bytes
        return await raw_exchange(
            target, _pieces(data, 1), gap_s=interval_s, timeout_s=head_deadline_s * 3
        )

    async def slow_body() -> RawAnswer:
        head = request_bytes(target, "POST", f"{API}/tasks/submit", content_length=body_bytes)
        return await raw_exchange(
            target,
            [head, *_pieces(b" " * body_bytes, 1)],
            gap_s=interval_s,
            timeout_s=body_deadline_s * 3,
        )

    async def silent() -> RawAnswer:
        return await raw_exchange(target, [], timeout_s=head_deadline_s * 3)

    groups: list[tuple[str, Callable[[], Awaitable[RawAnswer]], int, float]] = [
        ("slow head", slow_head, env.slow_connections, head_deadline_s),
        ("silent connection", silent, max(1, env.slow_connections // 5), head_deadline_s),
        ("slow body", slow_body, max(1, env.slow_connections // 5), body_deadline_s),
    ]
    outcomes = []
    runs = [asyncio.gather(*(make() for _ in range(count))) for _, make, count, _ in groups]
    results = await asyncio.gather(*runs)
    for (case, _, count, deadline_s), answers in zip(groups, results, strict=True):
        cut = [a for a in answers if a.closed or a.status is not None]
        late = [a for a in cut if a.elapsed_s > deadline_s]
        errors = [a for a in answers if a.status is not None and a.status >= 500]
        statuses = sorted({a.status for a in answers if a.status is not None})
        outcome = Outcome(
            kind,
            f"{case} x{count}",
            f"408 or closed within {deadline_s:.1f}s",
            status=statuses[0] if statuses else None,
            closed=len(cut) == count,
            elapsed_ms=round(max(a.elapsed_s for a in answers) * 1e3, 1),
            ok=len(cut) == count and not late and not errors,
            detail=f"{len(cut)}/{count} cut, {len(late)} late, statuses {statuses}",
            summary="/".join(str(s) for s in statuses) or "closed",
        )
        outcomes.append(outcome)
    return outcomes


async def long_polls(target: Target, env: SweepEnv) -> list[Outcome]:
    """Hundreds of concurrent long-polls (task waits and claims) that all end on time,
    without a store connection each."""
    kind = "long-polls"
    count = env.long_polls
    wait_s = env.long_poll_wait_s
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)

    async def wait_task(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(f"{API}/tasks/{env.task_id}", params={"wait_s": str(wait_s)})

    async def wait_claim(http: httpx.AsyncClient) -> httpx.Response:
        return await http.post(
            f"{API}/tasks/claim", json={"agent_id": env.agent_id, "wait_s": wait_s}
        )

    fds_before = _open_sockets(target.pid)
    redis_before = _redis_connections(target.pid, target.redis_port)
    started = time.monotonic()
    async with _client(target, limits=limits, timeout=wait_s + REQUEST_TIMEOUT_S) as http:
        calls = [wait_task(http) if i % 2 == 0 else wait_claim(http) for i in range(count)]
        gathering = asyncio.gather(*calls, return_exceptions=True)
        # Sample the server's sockets while every long-poll is waiting.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gathering), wait_s / 2)
        fds_during = _open_sockets(target.pid)
        redis_during = _redis_connections(target.pid, target.redis_port)
        answers = await gathering
    elapsed_s = time.monotonic() - started
    errors = [a for a in answers if isinstance(a, BaseException)]
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    statuses = sorted({r.status_code for r in responses})
    task_waits = [r for i, r in enumerate(answers) if i % 2 == 0 and isinstance(r, httpx.Response)]
    claims = [r for i, r in enumerate(answers) if i % 2 == 1 and isinstance(r, httpx.Response)]
    ok = (
        not errors
        and all(r.status_code == 200 and r.json()["status"] == "pending" for r in task_waits)
        and all(r.status_code == 204 for r in claims)
        and elapsed_s < wait_s + LONG_POLL_SLACK_S
    )
    env.long_poll_stats = {
        "count": count,
        "wait_s": wait_s,
        "elapsed_s": round(elapsed_s, 2),
        "server_sockets_before": fds_before,
        "server_sockets_during": fds_during,
        "redis_connections_before": redis_before,
        "redis_connections_during": redis_during,
    }
    detail = f"statuses {statuses}, {len(errors)} errors"
    if errors:
        detail += f" (first: {type(errors[0]).__name__}: {errors[0]})"
    if redis_before is not None and redis_during is not None:
        detail += f", Redis connections {redis_before} -> {redis_during}"
        # Waiters share the store's pool (at most redis_max_connections, plus the one
        # notification subscription): with more waiters than that, all answering on
        # time, none can have held a connection for its wait.
        if redis_during > REDIS_POOL_MAX_CONNECTIONS + REDIS_EXTRA_CONNECTIONS:
            ok, detail = False, detail + " (more store connections than the pool holds)"
    return [
        Outcome(
            kind,
            f"{count} waits of {wait_s:g}s (half task, half claim)",
            "200 pending / 204, on time",
            status=statuses[0] if len(statuses) == 1 else None,
            closed=False,
            elapsed_ms=round(elapsed_s * 1e3, 1),
            ok=ok,
            detail=detail,
            summary="/".join(str(s) for s in statuses) or "no answer",
        )
    ]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(entry)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    return inodes


def _open_sockets(pid: int | None) -> int | None:
    """Sockets the server process holds (Linux only; None when unknown)."""
    if pid is None or not Path(f"/proc/{pid}/fd").is_dir():
        return None
    return len(_socket_inodes(pid))


def _redis_connections(pid: int | None, redis_port: int | None) -> int | None:
    """TCP connections of the server process to the Redis port (Linux only)."""
    if pid is None or redis_port is None or not Path(f"/proc/{pid}/fd").is_dir():
        return None
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port and parts[9] in inodes:
                count += 1
    return count


# -- the sweep -----------------------------------------------------------------------


@dataclass
class SweepEnv:
    """Objects the kinds act on, made before the sweep, and the sweep's settings."""

    task_id: str
    agent_id: str
    slow_connections: int = 50
    slow_interval_s: float = 1.0
    long_polls: int = 500
    long_poll_wait_s: float = 5.0
    long_poll_stats: dict[str, Any] = field(default_factory=dict)


KindFn = Callable[[Target, SweepEnv], Awaitable[list[Outcome]]]
KINDS: dict[str, KindFn] = {
    "malformed-json": malformed_json,
    "wrong-types": wrong_types,
    "huge-payloads": huge_payloads,
    "deep-nesting": deep_nesting,
    "invalid-utf8": invalid_utf8,
    "enormous-headers": enormous_headers,
    "slowloris": slowloris,
    "long-polls": long_polls,
}
"""Every kind of bad input, in the order the sweep runs them."""


async def prepare(target: Target, **settings: Any) -> SweepEnv:
    """A pending task no agent can claim (read by the probe, waited on by long-polls)
    and an agent with a capability no task asks for (its claims wait)."""
    marker = uuid.uuid4().hex[:8]
    async with _client(target) as http:
        submitted = await http.post(
            f"{API}/tasks/submit",
            json={
                "task_type": "sweep-probe",
                "payload": {"sweep": marker},
                "required_capabilities": [f"sweep-nobody-{marker}"],
            },
        )
        submitted.raise_for_status()
        agent_id = f"sweep-agent-{marker}"
        registered = await http.post(
            f"{API}/agents/register",
            json={
                "agent_id": agent_id,
                "capabilities": [f"sweep-idle-{marker}"],
                "model": "sweep",
                "max_concurrent_tasks": 1,
            },
        )
        registered.raise_for_status()
    return SweepEnv(task_id=submitted.json()["task_id"], agent_id=agent_id, **settings)


async def clean_up(target: Target, env: SweepEnv) -> None:
    """Cancel the probe task and deregister the agent (best effort)."""
    async with _client(target) as http:
        with contextlib.suppress(httpx.HTTPError):
            await http.post(f"{API}/tasks/{env.task_id}/cancel")
            await http.delete(f"{API}/agents/{env.agent_id}")


@dataclass
class SweepReport:
    outcomes: list[Outcome]
    baseline: LatencySummary
    during: LatencySummary
    probe_failures: list[str]
    long_polls: dict[str, Any]

    @property
    def server_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.server_error]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.server_errors and not self.probe_failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcomes": [{**asdict(o), "got": o.got} for o in self.outcomes],
            "probe": {
                "baseline": asdict(self.baseline),
                "during": asdict(self.during),
                "failures": self.probe_failures[:20],
            },
            "long_polls": self.long_polls,
        }


async def run_sweep(
    target: Target, kinds: Sequence[str] = tuple(KINDS), **settings: Any
) -> SweepReport:
    """Run ``kinds`` one after another with the probe running throughout."""
    env = await prepare(target, **settings)
    probe = Probe(target, env.task_id)
    baseline = await asyncio.to_thread(probe.sample, BASELINE_PROBES)
    probe.start()
    outcomes: list[Outcome] = []
    try:
        for kind in kinds:
            outcomes += await KINDS[kind](target, env)
    finally:
        during = probe.stop()
        await clean_up(target, env)
    return SweepReport(outcomes, baseline, during, probe.failures, env.long_poll_stats)


# -- command line --------------------------------------------------------------------


def print_report(report: SweepReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Bad-input sweep")
    for column in ("kind", "case", "expected", "got", "ms", "ok", "detail"):
        table.add_column(column, overflow="fold")
    for o in report.outcomes:
        mark = "[green]yes[/]" if o.ok else "[red]NO[/]"
        table.add_row(o.kind, o.case, o.expected, o.got, f"{o.elapsed_ms:.0f}", mark, o.detail)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    probe = Table(title="Probe: GET a task, one connection, from another thread")
    for column in ("phase", "requests", "failures", "p50 ms", "p99 ms", "max ms"):
        probe.add_column(column)
    for phase, summary in (("baseline", report.baseline), ("during sweep", report.during)):
        probe.add_row(
            phase,
            str(summary.count),
            str(summary.failures),
            str(summary.p50_ms),
            str(summary.p99_ms),
            str(summary.max_ms),
        )
    console.print(probe)
    if report.long_polls:
        console.print(f"long-polls: {json.dumps(report.long_polls)}")
    verdict = "[green]PASS[/]" if report.ok else "[red]FAIL[/]"
    console.print(
        f"{verdict}: {len(report.failed)} unexpected answers, "
        f"{len(report.server_errors)} server errors, {len(report.probe_failures)} probe failures"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.sweep",
        description="Send every kind of bad input to a real aragora server and check that "
        "each gets a clear 4xx or a clean cut, while a probe measures responsiveness.",
    )
    parser.add_argument("--url", help="Target this running server instead of starting one.")
    parser.add_argument("--token", help="Admin token of workspace default (with --url).")
    parser.add_argument(
        "--store", help="Store of the started server (default: SQLite in a temp dir)."
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"Comma-separated kinds to run (default: all): {', '.join(KINDS)}.",
    )
    parser.add_argument(
        "--header-timeout-s",
        type=float,
        default=None,
        help=f"The server's head deadline (started server: {SPAWNED_HEADER_TIMEOUT_S}; "
        "with --url: 10, the server default).",
    )
    parser.add_argument(
        "--body-timeout-s",
        type=float,
        default=None,
        help=f"The server's body deadline (started server: {SPAWNED_BODY_TIMEOUT_S}; "
        "with --url: 30).",
    )
    parser.add_argument(
        "--body-limit-bytes",
        type=int,
        default=DEFAULT_BODY_LIMIT_BYTES,
        help="The server's request body limit (default: that of the default config).",
    )
    parser.add_argument("--slow-connections", type=int, default=50)
    parser.add_argument("--slow-interval-s", type=float, default=1.0)
    parser.add_argument("--long-polls", type=int, default=500)
    parser.add_argument("--long-poll-wait-s", type=float, default=5.0)
    parser.add_argument("--json-out", type=Path, default=Path("sweep-report.json"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        build_parser().error(f"unknown kinds: {', '.join(unknown)}")
    settings = {
        "slow_connections": args.slow_connections,
        "slow_interval_s": args.slow_interval_s,
        "long_polls": args.long_polls,
        "long_poll_wait_s": args.long_poll_wait_s,
    }
    with contextlib.ExitStack() as stack:
        if args.url:
            if not args.token:
                build_parser().error("--url needs --token")
            target = Target(
                args.url.rstrip("/"),
                args.token,
                args.header_timeout_s or 10.0,
                args.body_timeout_s or 30.0,
                args.body_limit_bytes,
            )
        else:
            target = stack.enter_context(
                spawned_server(
                    store=args.store,
                    header_timeout_s=args.header_timeout_s or SPAWNED_HEADER_TIMEOUT_S,
                    body_timeout_s=args.body_timeout_s or SPAWNED_BODY_TIMEOUT_S,
                )
            )
        report = asyncio.run(run_sweep(target, kinds, **settings))
    print_report(report)
    args.json_out.write_text(json.dumps(report.to_json(), indent=2))
    print(f"report written to {args.json_out}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
