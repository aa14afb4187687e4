"""Stateful fuzzing of the HTTP API of a real ``aragora serve`` along its OpenAPI links.

Schemathesis (its command line, which copes with a server whose state moves on between
replays) chains calls along the links of the document
(:data:`aragora.server.openapi.LINKS`): submit -> get / cancel / retry, register ->
claim -> complete / fail with the lease token, create workspace -> get / update, put
rule or flag -> delete, issue token -> revoke. It checks every answer: no 5xx; status
code, content type, headers and body as documented; schema-invalid input rejected; a
resource just created can be read, one just deleted cannot. One check is left out
(:data:`EXCLUDED_CHECKS`).

Every call carries the bootstrap admin token of workspace ``default``. Admins may act
as any agent of their workspace, so claim, complete and fail run with the same token
as submit; the role checks of agent tokens have tests of their own
(``tests/server/test_authz.py``). Schemathesis reuses ids it saw in answers, so the
hooks keep it from revoking that token or changing the quotas of ``default``, either
of which would leave the rest of the run answered 401 or 403.

The example budget is small by default, so the suite stays quick in CI. For a long
run, set ``ARAGORA_FUZZ_EXAMPLES`` (and ``ARAGORA_FUZZ_PHASES`` to add the stateless
phases)::

    ARAGORA_FUZZ_EXAMPLES=1000 ARAGORA_FUZZ_PHASES=examples,coverage,fuzzing,stateful \\
        .venv/bin/pytest tests/server/test_api_stateful.py -q -s

A long run has no time limit; ``-s`` shows schemathesis's summary.

Claims and task waits are cut to a few milliseconds by a schemathesis hook in this
module: fuzzing is about inputs, and a claim that waits its full ``wait_s`` would only
slow the run down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from chaos.sweep import Target, spawned_server

from aragora.control_plane import ControlPlaneConfig
from aragora.server import create_app
from aragora.server.openapi import LINKS

DEFAULT_EXAMPLES = 30
DEFAULT_PHASES = "stateful"
FUZZ_WAIT_S = 0.01
EXAMPLES = int(os.environ.get("ARAGORA_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)
PHASES = os.environ.get("ARAGORA_FUZZ_PHASES") or DEFAULT_PHASES
LONG_RUN = "ARAGORA_FUZZ_EXAMPLES" in os.environ
SEED = 20_261_129
EXCLUDED_CHECKS = ("positive_data_acceptance",)
""""Every schema-valid request is accepted" cannot hold where the server validates more
than JSON Schema can say: Cedar rule text, rollouts adding up to 100, a task that must
be failed before a retry. Every other check runs, response conformance included."""
HOOKS_MODULE = __name__
PROTECTED_ENV = "ARAGORA_FUZZ_PROTECTED"
"""JSON naming the tokens and workspaces the run must leave alone (see the hooks)."""
REPO_ROOT = Path(__file__).resolve().parents[2]


def _shorten_waits(case: Any) -> None:
    body = case.body
    if isinstance(body, dict):  # a claim, or a batch of claims
        wait_s = body.get("wait_s")
        if isinstance(wait_s, int | float) and not isinstance(wait_s, bool) and wait_s > 0:
            body["wait_s"] = min(wait_s, FUZZ_WAIT_S)
    query = case.query
    if isinstance(query, dict) and "wait_s" in query:
        try:
            if float(query["wait_s"]) > FUZZ_WAIT_S:
                query["wait_s"] = FUZZ_WAIT_S
        except (TypeError, ValueError):
            pass  # not a number: the server answers 422 at once


def _spares_the_fuzzer(case: Any, protected: dict[str, list[str]]) -> bool:
    """False for a call that would lock the run out: revoking a token that existed
    before it (its own), or changing the quotas of its own workspace."""
    parameters = case.path_parameters or {}
    if case.method == "DELETE" and case.path.endswith("/tokens/{token_id}"):
        return parameters.get("token_id") not in protected["token_ids"]
    if case.method == "PATCH" and case.path.endswith("/workspaces/{name}"):
        return parameters.get("name") not in protected["workspaces"]
    return True


if os.environ.get("SCHEMATHESIS_HOOKS") == HOOKS_MODULE:
    # Registered only in the schemathesis process that loads this module as its hooks.
    _PROTECTED = json.loads(os.environ.get(PROTECTED_ENV) or '{"token_ids": [], "workspaces": []}')

    @schemathesis.hook
    def filter_case(context: Any, case: Any) -> bool:
        return _spares_the_fuzzer(case, _PROTECTED)

    @schemathesis.hook
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        _shorten_waits(case)


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[Target]:
    """A server on Redis under a key prefix of its own, removed afterwards."""
    prefix = f"aragora:stateful:{uuid.uuid4().hex[:12]}:"
    try:
        with spawned_server(store=redis_url, key_prefix=prefix) as target:
            yield target
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.mark.timeout(0 if LONG_RUN else 300)
def test_linked_calls_get_no_server_error_and_match_the_schema(
    server: Target, tmp_path: Path
) -> None:
    report = tmp_path / "report.xml"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{server.url}/openapi.json",
        f"--phases={PHASES}",
        "--checks=all",
        f"--exclude-checks={','.join(EXCLUDED_CHECKS)}",
        f"--header=Authorization: Bearer {server.token}",
        f"--max-examples={EXAMPLES}",
        "--request-timeout=30",
        "--workers=1",
        "--continue-on-failure",
        "--report=junit",
        f"--report-junit-path={report}",
        "--no-color",
    ]
    if not LONG_RUN:
        command.append(f"--seed={SEED}")
    # Learned from earlier answers, the ids of the run's own token and workspace would
    # be fuzzed like any other; revoking the one or limiting the other ends the run.
    existing = httpx.get(f"{server.url}/api/control-plane/tokens", headers=server.auth_header)
    existing.raise_for_status()
    protected = {
        "token_ids": [token["token_id"] for token in existing.json()["tokens"]],
        "workspaces": ["default"],
    }
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": HOOKS_MODULE,
        PROTECTED_ENV: json.dumps(protected),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False
    )
    print(done.stdout)  # the run's summary, shown with pytest -s
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
    # The links were followed: the stateful phase ran scenarios across operations.
    assert "Stateful" in done.stdout, done.stdout


def test_every_link_names_an_operation_and_its_parameters() -> None:
    document = create_app(ControlPlaneConfig(store_url="sqlite:///never-opened.db")).openapi()
    operations = {
        op["operationId"]: op for methods in document["paths"].values() for op in methods.values()
    }
    assert LINKS
    for (source, status), links in LINKS.items():
        assert status in operations[source]["responses"], (source, status)
        assert operations[source]["responses"][status]["links"] == links
        for link in links.values():
            target = operations[link["operationId"]]
            names = {p["name"] for p in target.get("parameters", [])}
            assert set(link.get("parameters", {})) <= names, link
            if "requestBody" in link:
                body = target["requestBody"]["content"]["application/json"]["schema"]
                ref = body["$ref"].rsplit("/", 1)[-1]
                fields = document["components"]["schemas"][ref]["properties"]
                assert set(link["requestBody"]) <= set(fields), link


def _schema_keywords(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _schema_keywords(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schema_keywords(item)


def test_every_bound_is_written_as_json_schema() -> None:
    """Bounds written as pydantic's ``ge``/``le`` are invisible to clients and fuzzers
    (which then send 3414848701346839 as a valid ``max_concurrent_tasks``)."""
    document = create_app(ControlPlaneConfig(store_url="sqlite:///never-opened.db")).openapi()
    keywords = set(_schema_keywords(document["components"]["schemas"]))
    assert not keywords & {"ge", "gt", "le", "lt"}
    register = document["components"]["schemas"]["RegisterAgentRequest"]["properties"]
    assert register["max_concurrent_tasks"]["maximum"] == 1024


def test_error_bodies_are_documented_as_problem_json() -> None:
    """Also on routes whose answers are health+json: their 401 is a problem."""
    document = create_app(ControlPlaneConfig(store_url="sqlite:///never-opened.db")).openapi()
    for path, methods in document["paths"].items():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                for media_type, body in (response.get("content") or {}).items():
                    if body["schema"].get("$ref", "").endswith("/Problem"):
                        assert media_type == "application/problem+json", (path, status)
    health = document["paths"]["/api/control-plane/health"]["get"]["responses"]
    assert list(health["401"]["content"]) == ["application/problem+json"]
    assert list(health["503"]["content"]) == ["application/health+json"]
