"""What operators and admins do from the dashboard: retry a failed task, drain and
remove an agent, create and revoke tokens; and what an operator is not shown.

Each action is checked as a user would notice it (the page changes by itself, through
the live feed) and against the API.
"""

from __future__ import annotations

import re
import signal
import uuid
from typing import Any

import httpx
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.browser.conftest import API, DESKTOP, Submit, sign_in
from tests.e2e.conftest import AgentProc, Processes, ServerProc


def _open_task(page: Page, task_id: str) -> None:
    page.get_by_role("tab", name="Tasks").click()
    page.get_by_role("button", name=f"Open task {task_id}").click()
    expect(page.locator("#task-detail-title")).to_have_text(f"Task {task_id}")


def _task_status(page: Page, task_id: str) -> Any:
    return page.locator(f'tr[data-task="{task_id}"] [data-col="status"]')


def _accept_next_dialog(page: Page) -> list[str]:
    """Accept the next confirmation the page asks for; its message lands in the list."""
    messages: list[str] = []

    def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    return messages


def _as(server: ServerProc, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url + API, headers={"Authorization": f"Bearer {token}"})


def test_an_operator_retries_a_failed_task_and_it_completes(
    page: Page, server: ServerProc, api: httpx.Client, submit: Submit
) -> None:
    capability = f"retry-{uuid.uuid4().hex[:6]}"
    task_id = submit("echo", capability, payload={"label": "again"})
    # An agent speaking the HTTP API gives up on the task for good.
    with server.client(server.role_token("agent")) as worker:
        worker.register_agent(capability, [capability], "manual")
        try:
            claimed = worker.claim_task(capability)
            assert claimed is not None and claimed.id == task_id and claimed.lease_token
            worker.fail_task(
                task_id,
                "upstream quota exhausted",
                lease_token=claimed.lease_token,
                retryable=False,
            )
            sign_in(page, server, server.role_token("operator"))
            _open_task(page, task_id)
            expect(page.locator('[data-detail="status"]')).to_have_text("failed")
            expect(page.locator('.attempts li[data-attempt="1"]')).to_contain_text(
                "upstream quota exhausted"
            )

            page.get_by_role("button", name="Retry task").click()
            expect(page.locator("#notice")).to_have_text(f"Task {task_id} sent back to the queue.")
            expect(page.locator('[data-detail="status"]')).to_have_text("pending")
            expect(page.get_by_role("button", name="Retry task")).to_have_count(0)
            expect(page.get_by_role("button", name="Cancel task")).to_be_visible()
            expect(_task_status(page, task_id)).to_have_text("pending")
            assert api.get(f"/tasks/{task_id}").json()["status"] == "pending"

            again = worker.claim_task(capability)
            assert again is not None and again.id == task_id and again.lease_token
            worker.complete_task(task_id, {"answer": 42}, lease_token=again.lease_token)
            expect(page.locator('[data-detail="status"]')).to_have_text("completed")
            expect(page.locator("#task-detail")).to_contain_text('"answer": 42')
            # The first attempt's error stays in the task's history.
            expect(page.locator('.attempts li[data-attempt="1"]')).to_contain_text(
                "upstream quota exhausted"
            )
            expect(_task_status(page, task_id)).to_have_text("completed")
            expect(page.get_by_role("button", name="Retry task")).to_have_count(0)
        finally:
            worker.deregister_agent(capability)
    assert api.get(f"/tasks/{task_id}").json()["status"] == "completed"


def test_an_operator_drains_an_agent_then_removes_it_once_its_process_is_gone(
    page: Page,
    server: ServerProc,
    api: httpx.Client,
    submit: Submit,
    browser_procs: Processes,
) -> None:
    name = f"drain-{uuid.uuid4().hex[:6]}"
    agent = browser_procs.agent(
        server, capabilities=[name], agent_id=name, env={"SCRIPTED_BLOCK": "1"}
    )
    held = submit("block", name, payload={"label": "held"})
    agent.expect(f"STARTED {held}")
    sign_in(page, server, server.role_token("operator"))
    page.get_by_role("tab", name="Agents").click()
    status = page.locator(f'tr[data-agent="{name}"] [data-col="status"]')
    expect(status).to_have_text("busy")

    page.get_by_role("button", name=f"Drain {name}").click()
    expect(page.locator("#notice")).to_have_text(f"Drain {name}: done.")
    expect(status).to_have_text("draining")
    expect(page.get_by_role("button", name=f"Drain {name}")).to_have_count(0)
    drained = api.get(f"/agents/{name}").json()
    assert drained["status"] == "draining"
    assert drained["running_task_ids"] == [held], "a drained agent keeps what it runs"

    # Its host dies: the agent stays listed until someone removes it.
    agent.stop(signal.SIGKILL)
    asked = _accept_next_dialog(page)
    page.get_by_role("button", name=f"Remove {name}").click()
    expect(page.locator("#notice")).to_have_text(f"Remove {name}: done.")
    expect(page.locator(f'tr[data-agent="{name}"]')).to_have_count(0)
    assert asked == [f"Remove agent {name}? Its tasks go back to the queue."]
    assert api.get(f"/agents/{name}").status_code == 404

    # The task it held went back to the queue, its attempt recorded.
    _open_task(page, held)
    expect(page.locator('[data-detail="status"]')).to_have_text("pending")
    expect(page.locator('.attempts li[data-attempt="1"]')).to_contain_text("agent deregistered")
    expect(page.locator('.attempts li[data-attempt="1"]')).to_contain_text(name)
    assert api.get(f"/tasks/{held}").json()["status"] == "pending"


def test_an_operator_sees_no_workspace_view_and_no_token_controls(
    page: Page, server: ServerProc, steady_agent: AgentProc
) -> None:
    operator = server.role_token("operator")
    sign_in(page, server, operator)
    expect(page.locator("#who-text")).to_have_text("Workspace default · role operator")
    expect(page.get_by_role("tab", name="Workspace")).to_be_hidden()
    expect(page.get_by_role("tabpanel", name="Workspace")).to_be_hidden()
    # The keyboard cannot reach it either: End selects the last tab there is.
    page.get_by_role("tab", name="Overview").focus()
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Tasks")).to_have_attribute("aria-selected", "true")
    for view in ("Overview", "Agents", "Tasks"):
        page.get_by_role("tab", name=view).click()
        expect(page.get_by_role("button", name="Create token")).to_have_count(0)
        expect(page.get_by_role("button", name=re.compile(r"^Revoke token"))).to_have_count(0)
        expect(page.get_by_label("Role", exact=True)).to_have_count(0)
    # Operators manage agents, which is why they get Drain and Remove.
    page.get_by_role("tab", name="Agents").click()
    expect(page.get_by_role("button", name="Drain steady")).to_be_visible()

    with _as(server, operator) as as_operator:
        refused = as_operator.post("/tokens", json={"role": "admin"})
        assert refused.status_code == 403, refused.text
        assert as_operator.get("/tokens").status_code == 403


def test_an_admin_creates_a_token_that_is_shown_once_and_revokes_it(
    page: Page, server: ServerProc, api: httpx.Client, browser: Browser
) -> None:
    assert server.token is not None
    sign_in(page, server, server.token)
    page.get_by_role("tab", name="Workspace").click()
    expect(page.get_by_role("heading", name="Tokens")).to_be_visible()
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Create token").click()
    notice = page.locator("#notice")
    expect(notice).to_have_text(re.compile(r"^Token tok_\S+ created\.$"))
    match = re.match(r"Token (\S+) created\.", notice.inner_text())
    assert match is not None
    token_id = match[1]
    secret_box = page.locator("code.secret")
    expect(secret_box).to_be_visible()
    expect(page.get_by_text("copy it now, it is not shown again")).to_be_visible()
    secret = secret_box.inner_text().strip()
    row = page.locator(f'tr[data-token="{token_id}"]')
    expect(row).to_contain_text("viewer")
    expect(row).to_contain_text("active")

    # The secret works against the API as a viewer of this workspace...
    with _as(server, secret) as as_new:
        me = as_new.get("/whoami")
        assert me.status_code == 200, me.text
        assert me.json()["token_id"] == token_id
        assert (me.json()["workspace"], me.json()["role"]) == ("default", "viewer")
        assert as_new.get("/tasks").status_code == 200
    # ...and signs in a second dashboard.
    other_context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        watcher = other_context.new_page()
        sign_in(watcher, server, secret)
        expect(watcher.locator("#who-text")).to_have_text("Workspace default · role viewer")

        # Shown once: the next render of the view no longer has it.
        page.get_by_role("button", name="Refresh").click()
        expect(row).to_be_visible()
        expect(secret_box).to_have_count(0)
        assert secret not in page.content()

        asked = _accept_next_dialog(page)
        page.get_by_role("button", name=f"Revoke token {token_id}").click()
        expect(notice).to_have_text(f"Token {token_id} revoked.")
        expect(row).to_contain_text("revoked")
        expect(page.get_by_role("button", name=f"Revoke token {token_id}")).to_have_count(0)
        assert asked and asked[0].startswith(f"Revoke token {token_id}?")

        with _as(server, secret) as as_revoked:
            assert as_revoked.get("/tasks").status_code == 401
        listed = {t["token_id"]: t for t in api.get("/tokens").json()["tokens"]}
        assert listed[token_id]["revoked_at"] is not None
        # The second dashboard's open feed ends too, and it is signed out.
        expect(watcher.locator("#sign-in-error")).to_have_text(
            "The server refused the token; sign in again."
        )
        expect(watcher.get_by_label("API token")).to_be_visible()
        expect(watcher.locator("#app")).to_be_hidden()
    finally:
        other_context.close()
    # The admin's own page carries on.
    expect(page.locator("#connection")).to_have_text("Live")
