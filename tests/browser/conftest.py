"""A real browser against a real ``aragora serve``: Debian's Chromium, headless, driven
by Playwright.

The session fixture :func:`chromium_executable` installs Chromium with apt-get when
``/usr/bin/chromium`` is missing and fails (never skips) when that does not produce a
browser: the dashboard's tests must run wherever the suite runs. Playwright's own
browser downloads are not used.

One SQLite-backed server serves every test of this directory (they keep apart by
capability and task type; :func:`submit` cancels what a test leaves waiting), with two
scripted agents (``tests/e2e/agents/scripted.py``): ``steady`` runs tasks needing
``ui`` and ``flaky`` runs tasks needing ``flaky`` (its ``fail`` tasks fail on every
attempt). Breakers open after three calls in the window, and
retries wait 50 ms, so a failing task's story fits in a second.

Screenshots go to ``tests/browser/artifacts/`` (ignored by git); with
``ARAGORA_UPDATE_DOCS_IMAGES=1`` they are also written to ``docs/images/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.e2e.conftest import AgentProc, Processes, ServerProc

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium opens connections of its own, which this network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS_IMAGES = Path(__file__).parents[2] / "docs" / "images"
API = "/api/control-plane"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SERVER_ENV = {
    "ARAGORA_BREAKER_MIN_CALLS": "3",
    "ARAGORA_BREAKER_OPEN_S": "120",
    "ARAGORA_RETRY_BACKOFF_BASE_S": "0.05",
    "ARAGORA_RETRY_BACKOFF_MAX_S": "0.1",
}
APT_TIMEOUT_S = 900

expect.set_options(timeout=15_000)


def _install_chromium() -> None:
    if shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(
            [*sudo, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """Debian's Chromium, installed with apt-get when missing; a failure otherwise."""
    if not CHROMIUM.exists():
        _install_chromium()
    if not CHROMIUM.exists():
        pytest.fail(f"installing chromium did not produce {CHROMIUM}")
    return CHROMIUM


# Package scope, not session: the sync driver keeps an event loop running on this
# thread until it exits, and the asyncio tests that run after this package need none.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright, chromium_executable: Path) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=str(chromium_executable), args=list(CHROMIUM_ARGS)
    )
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="package")
def browser_procs(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Processes]:
    processes = Processes(tmp_path_factory.mktemp("browser"), redis_url)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture(scope="package")
def server(browser_procs: Processes) -> ServerProc:
    """``aragora serve`` on SQLite with short retries and quick breakers."""
    return browser_procs.server(env=SERVER_ENV)


@pytest.fixture(scope="package")
def steady_agent(browser_procs: Processes, server: ServerProc) -> AgentProc:
    return browser_procs.agent(server, capabilities=["ui"], agent_id="steady", concurrency=2)


@pytest.fixture(scope="package")
def flaky_agent(browser_procs: Processes, server: ServerProc) -> AgentProc:
    return browser_procs.agent(server, capabilities=["flaky"], agent_id="flaky")


@pytest.fixture(scope="package")
def api(server: ServerProc) -> Iterator[httpx.Client]:
    """The HTTP API with the admin token of workspace ``default``."""
    assert server.token is not None
    with httpx.Client(
        base_url=server.url + API, headers={"Authorization": f"Bearer {server.token}"}
    ) as client:
        yield client


Submit = Callable[..., str]


@pytest.fixture
def submit(api: httpx.Client) -> Iterator[Submit]:
    """``submit(task_type, capability, **fields)``: queue a task in workspace ``default``
    and return its id. Tasks still pending or running when the test ends are cancelled,
    so that no test sees another's queue."""
    submitted: list[str] = []

    def submit_task(task_type: str, capability: str, **fields: Any) -> str:
        body = {"task_type": task_type, "required_capabilities": [capability], **fields}
        response = api.post("/tasks/submit", json=body)
        assert response.status_code == 201, response.text
        task_id: str = response.json()["task_id"]
        submitted.append(task_id)
        return task_id

    yield submit_task
    for task_id in submitted:
        if api.get(f"/tasks/{task_id}").json()["status"] in ("pending", "running"):
            api.post(f"/tasks/{task_id}/cancel")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Screenshots:
    """Saves screenshots as test artefacts, and to ``docs/images`` when asked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.to_docs = os.environ.get("ARAGORA_UPDATE_DOCS_IMAGES") == "1"

    def take(self, page: Page, name: str, *, for_docs: bool = True) -> Path:
        """Save ``name.png``; ``for_docs``: one of the pictures the docs show."""
        path = self.directory / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        if self.to_docs and for_docs:
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_IMAGES / path.name)
        return path


@pytest.fixture(scope="session")
def screenshots(artifacts: Path) -> Screenshots:
    return Screenshots(artifacts)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page whose script errors fail the test."""
    opened = context.new_page()
    errors: list[Any] = []

    def record(error: Any) -> None:
        errors.append(error)

    opened.on("pageerror", record)
    yield opened
    assert not errors, f"errors in the page: {errors}"


def sign_in(page: Page, server: ServerProc, token: str) -> None:
    """Open the dashboard, sign in with ``token`` and wait for the live feed."""
    page.goto(server.url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("Live")


def feed_until(
    server: ServerProc,
    token: str,
    event: str,
    until: Callable[[Any], bool],
    timeout_s: float = 15.0,
) -> tuple[Any, str]:
    """Follow the live feed as the page does until an ``event`` whose data satisfies
    ``until``; that data and every line read (a failure after ``timeout_s``)."""
    raw: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    deadline = time.monotonic() + timeout_s
    with httpx.stream(
        "GET", f"{server.url}{API}/events", headers=headers, timeout=timeout_s
    ) as response:
        assert response.status_code == 200, response.read()
        name = None
        for line in response.iter_lines():
            raw.append(line)
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name == event:
                data = json.loads(line.removeprefix("data: "))
                if until(data):
                    return data, "\n".join(raw)
            if time.monotonic() > deadline:
                break
    pytest.fail(f"no {event!r} event as expected within {timeout_s} s:\n" + "\n".join(raw))
