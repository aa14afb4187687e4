"""Schemathesis fuzzes every operation of the OpenAPI document: no input gets a 5xx.

Every call carries the bootstrap admin token of workspace ``default``, so the fuzzing
reaches the handlers (and the administration routes) rather than stopping at 401. The
app runs in schemathesis's own event loop thread with its lifespan, so it opens
its own coordinator on the test's store; the fixture shuts that lifespan down.
(The schema is loaded at import rather than from a fixture: schemathesis's lazy
fixture loader does not work with this pytest.)
Claims wait at most a few milliseconds here: fuzzing is about inputs, and a claim by a
fuzzed agent that happens to exist would otherwise hold for its whole ``wait_s``.
``ARAGORA_FUZZ_EXAMPLES`` raises the number of examples per operation for a long run
(see ``docs/fuzzing.md``); the stateful run against a real server is
``test_api_stateful.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi

from aragora.control_plane import ControlPlaneConfig
from aragora.server import create_app
from tests.server.conftest import ADMIN_TOKEN, SECRET_KEY, bearer

FUZZ_WAIT_S = 0.01
EXAMPLES = int(os.environ.get("ARAGORA_FUZZ_EXAMPLES") or 25)
LONG_RUN = "ARAGORA_FUZZ_EXAMPLES" in os.environ


# The document does not depend on the store: an app that never starts describes it.
schema = schemathesis.openapi.from_dict(
    create_app(ControlPlaneConfig(store_url="sqlite:///never-opened.db")).openapi()
)


@pytest.fixture
def fuzz_app(config: ControlPlaneConfig) -> Iterator[FastAPI]:
    """An app on the test's store; its lifespan starts on the first fuzzed call."""
    try:
        yield create_app(config, secret_key=SECRET_KEY, admin_token=ADMIN_TOKEN)
    finally:
        asgi.shutdown_lifespans()


def _shorten_waits(case: Any) -> None:
    body = case.body
    if case.path.endswith("/tasks/claim") and isinstance(body, dict):
        wait_s = body.get("wait_s")
        if isinstance(wait_s, int | float) and not isinstance(wait_s, bool) and wait_s > 0:
            body["wait_s"] = min(wait_s, FUZZ_WAIT_S)


@schema.parametrize()
@pytest.mark.timeout(0 if LONG_RUN else 60)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: Any, fuzz_app: FastAPI) -> None:
    _shorten_waits(case)
    response = case.call(app=fuzz_app, headers=bearer(ADMIN_TOKEN))
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    if "Authorization" in response.request.headers:  # some cases test a missing token
        assert response.status_code != 401, "the fuzzing must get past authentication"
