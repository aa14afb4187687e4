"""Bad input against a real ``aragora serve`` process: every kind gets a clear 4xx or a
clean cut, and the server keeps answering other clients throughout.

The cases are those of the sweep (:mod:`chaos.sweep`, also runnable on its own as
``python -m chaos.sweep``); here each kind is asserted on its own, then the whole
sweep runs with a probe reading a task, whose p99 latency must stay under
:data:`PROBE_P99_BOUND_MS` (a liveness check, not a benchmark). The server runs on
Redis, so the long-polls also show that waiting holds no store connection per waiter,
and with head and body deadlines of a few seconds, so that slow clients are cut soon.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from chaos.sweep import (
    API,
    CUT_SLACK_S,
    KINDS,
    REDIS_EXTRA_CONNECTIONS,
    REDIS_POOL_MAX_CONNECTIONS,
    Outcome,
    SweepEnv,
    Target,
    clean_up,
    prepare,
    run_sweep,
    spawned_server,
)

from aragora.control_plane.errors import ConfigError
from aragora.server.middleware.http_limits import LimitedH11Protocol
from aragora.server.run import OPEN_FILES_CAP, http_protocol_from_env, raise_open_file_limit
from aragora.server.schemas import MAX_COST

PROBE_P99_BOUND_MS = 1000.0
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def target(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server on Redis (under a key prefix of its own) for the module."""
    prefix = f"aragora:badinput:{uuid.uuid4().hex[:12]}:"
    log_path = tmp_path_factory.mktemp("bad-input") / "server.log"
    try:
        with spawned_server(
            store=redis_url,
            key_prefix=prefix,
            header_timeout_s=HEADER_TIMEOUT_S,
            body_timeout_s=BODY_TIMEOUT_S,
            log_path=log_path,
        ) as server:
            yield server
        _assert_no_server_error_logged(log_path)
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def _assert_no_server_error_logged(log_path: Path) -> None:
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    assert '"level": "error"' not in log, log


@pytest.fixture
async def env(target: Target) -> AsyncIterator[SweepEnv]:
    made = await prepare(target, slow_connections=10, long_polls=200, long_poll_wait_s=2.0)
    yield made
    await clean_up(target, made)


def _failures(outcomes: list[Outcome]) -> str:
    return "\n".join(
        f"{o.case}: expected {o.expected}, got {o.got} {o.detail} {o.problem}"
        for o in outcomes
        if not o.ok
    )


async def _run_kind(kind: str, target: Target, env: SweepEnv) -> list[Outcome]:
    outcomes = await KINDS[kind](target, env)
    assert outcomes
    assert not _failures(outcomes), _failures(outcomes)
    assert not [o for o in outcomes if o.server_error]
    return outcomes


def _by_case(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.case: o for o in outcomes}


async def test_malformed_json_is_400_naming_the_body(target: Target, env: SweepEnv) -> None:
    outcomes = _by_case(await _run_kind("malformed-json", target, env))
    problem = outcomes["truncated object"].problem
    assert problem is not None
    assert problem["errors"][0]["reason"].startswith("is not valid JSON")
    assert outcomes["text/plain body"].status == 415


async def test_wrong_types_are_422_naming_each_field(target: Target, env: SweepEnv) -> None:
    outcomes = _by_case(await _run_kind("wrong-types", target, env))
    problem = outcomes["submit: unknown field"].problem
    assert problem is not None
    assert problem["errors"] == [{"field": "priorty", "reason": "is not a known field"}]


async def test_bodies_over_the_limit_are_413_before_the_body_is_read(
    target: Target, env: SweepEnv
) -> None:
    outcomes = _by_case(await _run_kind("huge-payloads", target, env))
    declared = outcomes["64 MiB declared, no body sent"]
    # Answered although not one byte of the body was sent.
    assert declared.status == 413
    assert declared.problem is not None
    assert declared.problem["limit_bytes"] == target.body_limit_bytes
    assert outcomes["chunked body over the limit"].status == 413


async def test_deep_nesting_is_4xx_not_a_recursion_error(target: Target, env: SweepEnv) -> None:
    outcomes = _by_case(await _run_kind("deep-nesting", target, env))
    one_too_many = outcomes["payload: 101 levels (one too many)"].problem
    assert one_too_many is not None
    assert "deeper than 100 levels" in one_too_many["errors"][0]["reason"]


async def test_invalid_utf8_is_400_and_lone_surrogates_422(target: Target, env: SweepEnv) -> None:
    outcomes = _by_case(await _run_kind("invalid-utf8", target, env))
    surrogate = outcomes["body: lone surrogate escape"].problem
    assert surrogate is not None
    assert "lone surrogate" in surrogate["errors"][0]["reason"]


async def test_enormous_heads_are_refused_with_431(target: Target, env: SweepEnv) -> None:
    outcomes = _by_case(await _run_kind("enormous-headers", target, env))
    # A head that arrives in one read is refused as surely as one in many.
    assert outcomes["one header of 64 KiB"].status == 431
    assert outcomes["4000 headers"].status == 431


@pytest.mark.timeout(90)
async def test_slow_clients_are_cut_at_their_deadlines(target: Target, env: SweepEnv) -> None:
    outcomes = _by_case(await _run_kind("slowloris", target, env))
    assert outcomes["slow head x10"].status == 408


async def test_a_slow_head_after_a_response_is_cut_too(target: Target) -> None:
    """Keep-alive: the second request on a connection gets the same head deadline."""
    host, port = target.host_port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert first.startswith(b"HTTP/1.1 200")
        length = next(
            int(line.split(b":")[1])
            for line in first.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await asyncio.wait_for(reader.readexactly(length), 5.0)
        started = time.monotonic()
        deadline = started + HEADER_TIMEOUT_S + CUT_SLACK_S
        answer = b""
        writer.write(b"GET /livez HTTP/1.1\r\n")
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                writer.write(b"X")  # one more byte of a header that never ends
                continue
            answer += chunk
            if not chunk:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9
    finally:
        writer.close()


@pytest.mark.timeout(90)
async def test_long_polls_hold_no_store_connection_each(target: Target, env: SweepEnv) -> None:
    await _run_kind("long-polls", target, env)
    stats = env.long_poll_stats
    assert stats["server_sockets_during"] >= stats["count"]
    # More waiters than the store's pool has connections, all answered on time (which
    # the sweep checks): waiting holds no connection, so the pool is all there is.
    assert stats["count"] > REDIS_POOL_MAX_CONNECTIONS
    assert (
        stats["redis_connections_during"] <= REDIS_POOL_MAX_CONNECTIONS + REDIS_EXTRA_CONNECTIONS
    ), stats


@pytest.mark.timeout(180)
async def test_the_server_stays_responsive_through_the_whole_sweep(target: Target) -> None:
    report = await run_sweep(
        target, slow_connections=20, long_polls=300, long_poll_wait_s=3.0, slow_interval_s=0.5
    )
    assert report.ok, _failures(report.outcomes) + "\n" + "\n".join(report.probe_failures)
    assert report.during.count >= 50
    assert report.during.p99_ms is not None
    assert report.during.p99_ms < PROBE_P99_BOUND_MS, report.to_json()["probe"]


def test_http_deadlines_come_from_the_environment() -> None:
    protocol = http_protocol_from_env(
        {"ARAGORA_HTTP_HEADER_TIMEOUT_S": "1.5", "ARAGORA_HTTP_BODY_TIMEOUT_S": "7"}
    )
    assert issubclass(protocol, LimitedH11Protocol)
    assert (protocol.header_timeout_s, protocol.body_timeout_s) == (1.5, 7.0)
    with pytest.raises(ConfigError, match="ARAGORA_HTTP_HEADER_TIMEOUT_S"):
        http_protocol_from_env({"ARAGORA_HTTP_HEADER_TIMEOUT_S": "soon"})
    with pytest.raises(ConfigError):
        http_protocol_from_env({"ARAGORA_HTTP_BODY_TIMEOUT_S": "0"})


async def test_a_whole_number_written_with_a_fraction_is_an_integer(target: Target) -> None:
    """JSON has one number type: ``2.0`` is the integer JSON Schema says it is."""
    async with httpx.AsyncClient(base_url=target.url, headers=target.auth_header) as http:
        body = {"agent_id": f"whole-{uuid.uuid4().hex[:6]}", "capabilities": [], "model": "m"}
        accepted = await http.post(
            f"{API}/agents/register", json={**body, "max_concurrent_tasks": 2.0}
        )
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["max_concurrent_tasks"] == 2
        for refused in (2.5, "2", True):
            response = await http.post(
                f"{API}/agents/register", json={**body, "max_concurrent_tasks": refused}
            )
            assert response.status_code == 422, (refused, response.text)
            assert response.json()["field"] == "max_concurrent_tasks"
        await http.delete(f"{API}/agents/{body['agent_id']}")


async def test_method_not_allowed_names_every_method_of_the_path(target: Target) -> None:
    async with httpx.AsyncClient(base_url=target.url, headers=target.auth_header) as http:
        flags = await http.request("OPTIONS", f"{API}/flags/some-flag")
        tokens = await http.patch(f"{API}/tokens")
        # Also fits /agents/{agent_id} (GET, DELETE), but the client meant register.
        register = await http.request("OPTIONS", f"{API}/agents/register")
    assert flags.status_code == 405
    assert flags.headers["allow"] == "DELETE, PUT"
    assert flags.headers["content-type"] == "application/problem+json"
    assert tokens.status_code == 405
    assert tokens.headers["allow"] == "GET, POST"
    assert register.headers["allow"] == "POST"


def test_the_server_raises_its_open_file_limit(target: Target) -> None:
    """A long-poll holds a file descriptor while it waits; 1024 would not go far."""
    assert target.pid is not None
    limits = Path(f"/proc/{target.pid}/limits").read_text().splitlines()
    soft = next(line.split()[3] for line in limits if line.startswith("Max open files"))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_CAP)
    assert soft == "unlimited" or int(soft) >= expected


def test_raising_the_open_file_limit_stops_at_the_cap() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = 512 if hard == resource.RLIM_INFINITY else min(hard, 512)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        assert raise_open_file_limit(cap=cap) == cap
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (cap, hard)
        assert raise_open_file_limit(cap=cap) == cap  # already there: unchanged
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_costs_are_bounded_so_that_their_sums_stay_finite(target: Target) -> None:
    """Two estimates near the largest float summed to infinity, and /budget then
    failed with a 500 for the whole workspace."""
    workspace = f"costs-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=target.url, headers=target.auth_header) as http:
        created = await http.post(f"{API}/workspaces", json={"name": workspace})
        assert created.status_code == 201, created.text
        issued = await http.post(f"{API}/tokens", json={"workspace": workspace, "role": "admin"})
        token = issued.json()["token"]
    async with httpx.AsyncClient(
        base_url=target.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        too_large = await http.post(
            f"{API}/tasks/submit", json={"task_type": "t", "payload": 1, "cost_estimate": 1.5e308}
        )
        assert too_large.status_code == 422
        assert too_large.json()["field"] == "cost_estimate"
        for _ in range(2):
            accepted = await http.post(
                f"{API}/tasks/submit",
                json={"task_type": "t", "payload": 1, "cost_estimate": MAX_COST},
            )
            assert accepted.status_code == 201, accepted.text
        budget = await http.get(f"{API}/budget")
        assert budget.status_code == 200, budget.text
        assert budget.json()["reserved"] == 2 * MAX_COST
