"""The dashboard in a real browser against a real server and real agents.

Every wait is one of Playwright's auto-waiting ``expect`` assertions: the page must
change by itself (live feed), never by a reload.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import API, PHONE, Screenshots, Submit, feed_until, sign_in
from tests.e2e.conftest import AgentProc, Processes, ServerProc


def _open_task(page: Page, task_id: str) -> None:
    page.get_by_role("tab", name="Tasks").click()
    page.get_by_role("button", name=f"Open task {task_id}").click()
    expect(page.locator("#task-detail-title")).to_have_text(f"Task {task_id}")


def _task_status(page: Page, task_id: str) -> Any:
    return page.locator(f'tr[data-task="{task_id}"] [data-col="status"]')


def test_a_submitted_task_goes_from_pending_to_completed_without_a_reload(
    page: Page,
    server: ServerProc,
    submit: Submit,
    browser_procs: Processes,
    steady_agent: AgentProc,
    screenshots: Screenshots,
) -> None:
    assert server.token is not None
    sign_in(page, server, server.token)
    page.evaluate("window.__notReloaded = true")
    capability = f"late-{uuid.uuid4().hex[:6]}"
    task_id = submit("echo", capability, payload={"label": "live"}, priority="high")

    page.get_by_role("tab", name="Tasks").click()
    expect(_task_status(page, task_id)).to_have_text("pending")
    page.get_by_role("tab", name="Overview").click()
    expect(page.locator('[data-stat="pending"]')).to_have_text("1")
    screenshots.take(page, "dashboard-overview-pending", for_docs=False)

    late = browser_procs.agent(server, capabilities=[capability], agent_id=capability)
    late.expect(f"RAN {task_id}")
    expect(page.locator('[data-stat="pending"]')).to_have_text("0")
    expect(page.locator('[data-stat="completed"]')).not_to_have_text("0")
    page.get_by_role("tab", name="Tasks").click()
    expect(_task_status(page, task_id)).to_have_text("completed")
    assert page.evaluate("window.__notReloaded") is True
    page.get_by_role("tab", name="Overview").click()
    expect(page.locator('[data-stat="agents-idle"]')).not_to_have_text("0")
    _open_task(page, task_id)
    expect(page.locator("#task-detail")).to_contain_text('"label": "live"')
    screenshots.take(page, "dashboard-tasks")


def test_a_failing_agent_shows_every_attempt_and_its_breaker_opens(
    page: Page,
    server: ServerProc,
    submit: Submit,
    steady_agent: AgentProc,
    flaky_agent: AgentProc,
    screenshots: Screenshots,
) -> None:
    assert server.token is not None
    task_id = submit("fail", "flaky", payload={"label": "doomed"}, max_retries=2)
    sign_in(page, server, server.token)
    _open_task(page, task_id)
    expect(page.locator('[data-detail="status"]')).to_have_text("failed")
    attempts = page.locator(".attempts li")
    expect(attempts).to_have_count(3)
    for n in (1, 2, 3):
        attempt = page.locator(f'.attempts li[data-attempt="{n}"]')
        expect(attempt).to_contain_text(f"boom on attempt {n}")
        expect(attempt).to_contain_text("flaky")
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()
    screenshots.take(page, "dashboard-task-detail")

    page.get_by_role("tab", name="Agents").click()
    expect(page.locator('tr[data-agent="flaky"] [data-col="breaker"]')).to_have_text("open")
    expect(page.locator('tr[data-agent="steady"] [data-col="breaker"]')).to_have_text("closed")
    screenshots.take(page, "dashboard-agents")


def test_an_operator_cancels_a_task_from_its_detail(
    page: Page, server: ServerProc, api: httpx.Client, submit: Submit
) -> None:
    assert server.token is not None
    task_id = submit("echo", "nobody-has-this", payload={"label": "cancel me"})
    sign_in(page, server, server.token)
    _open_task(page, task_id)
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator('[data-detail="status"]')).to_have_text("cancelled")
    expect(page.locator("#notice")).to_have_text(f"Task {task_id} cancelled.")
    expect(_task_status(page, task_id)).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    assert api.get(f"/tasks/{task_id}").json()["status"] == "cancelled"


def test_a_viewer_sees_no_cancel_button_and_the_api_refuses_it(
    page: Page, server: ServerProc, api: httpx.Client, submit: Submit
) -> None:
    task_id = submit("echo", "nobody-has-this", payload={"label": "viewed"})
    viewer = server.role_token("viewer")
    sign_in(page, server, viewer)
    expect(page.locator("#who-text")).to_have_text("Workspace default · role viewer")
    expect(page.get_by_role("tab", name="Workspace")).to_be_hidden()
    _open_task(page, task_id)
    expect(page.locator('[data-detail="status"]')).to_have_text("pending")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    page.get_by_role("tab", name="Agents").click()
    expect(page.locator('tr[data-agent="steady"]')).to_be_visible()
    expect(page.get_by_role("button", name="Drain steady")).to_have_count(0)

    refused = httpx.post(
        f"{server.url}{API}/tasks/{task_id}/cancel",
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert refused.status_code == 403
    assert refused.json()["reason"] == "role viewer lacks task.cancel"
    assert api.get(f"/tasks/{task_id}").json()["status"] == "pending"


def test_another_workspaces_tasks_and_agents_never_reach_the_page(
    page: Page, server: ServerProc, api: httpx.Client, submit: Submit
) -> None:
    assert server.token is not None
    assert api.post("/workspaces", json={"name": "elsewhere"}).status_code == 201
    other = server.role_token("admin", "elsewhere")
    hidden_agent = f"secret-agent-{uuid.uuid4().hex[:6]}"
    with httpx.Client(
        base_url=server.url + API, headers={"Authorization": f"Bearer {other}"}
    ) as other_api:
        body = {"task_type": "secret-elsewhere", "payload": {"label": "not yours"}}
        response = other_api.post("/tasks/submit", json=body)
        assert response.status_code == 201, response.text
        hidden: str = response.json()["task_id"]
    issued = api.post("/tokens", json={"role": "agent", "workspace": "elsewhere"})
    assert issued.status_code == 201, issued.text
    with server.client(issued.json()["token"]) as elsewhere_agent:
        elsewhere_agent.register_agent(hidden_agent, ["secret-capability"], "secret-model")
    sign_in(page, server, server.token)
    page.get_by_role("tab", name="Tasks").click()
    # A task and an agent made after the other workspace's: once they show, the list
    # and the feed were read after the hidden ones existed.
    mine = submit("echo", "nobody-has-this", payload={"label": "mine"})
    my_agent = f"mine-{uuid.uuid4().hex[:6]}"
    with server.client(server.role_token("agent")) as default_agent:
        default_agent.register_agent(my_agent, ["nobody-has-this-either"], "scripted")
    expect(_task_status(page, mine)).to_have_text("pending")
    page.get_by_role("tab", name="Agents").click()
    expect(page.locator(f'tr[data-agent="{my_agent}"]')).to_be_visible()
    page.get_by_role("tab", name="Overview").click()
    expect(page.locator('[data-stat="pending"]')).not_to_have_text("0")
    markers = (hidden, "secret-elsewhere", hidden_agent, "secret-capability", "secret-model")
    for view in ("Overview", "Agents", "Tasks"):
        page.get_by_role("tab", name=view).click()
        content = page.content()
        assert not [m for m in markers if m in content], view
    page.get_by_label("Type").fill("secret-elsewhere")
    expect(page.get_by_text("No task matches these filters.")).to_be_visible()
    # The feed itself, as the page reads it.
    _, raw = feed_until(
        server, server.token, "agents", lambda d: my_agent in [a["agent_id"] for a in d["agents"]]
    )
    assert not [m for m in markers if m in raw]

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, other)
    expect(page.locator("#who-text")).to_have_text("Workspace elsewhere · role admin")
    page.get_by_role("tab", name="Tasks").click()
    expect(_task_status(page, hidden)).to_have_text("pending")
    expect(page.locator(f'tr[data-task="{mine}"]')).to_have_count(0)
    page.get_by_role("tab", name="Agents").click()
    expect(page.locator(f'tr[data-agent="{hidden_agent}"]')).to_be_visible()
    expect(page.locator("tr[data-agent]")).to_have_count(1)


def test_the_workspace_view_and_keyboard_navigation(
    page: Page, server: ServerProc, screenshots: Screenshots
) -> None:
    assert server.token is not None
    sign_in(page, server, server.token)
    # Tasks per second need two snapshots a second apart.
    expect(page.locator('[data-stat="tasks-per-s"]')).not_to_have_text("—")
    screenshots.take(page, "dashboard-overview")
    page.locator("body").focus()
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.getAttribute('role')") == "tab":
            break
    focused = page.locator(":focus")
    expect(focused).to_have_attribute("role", "tab")
    expect(focused).to_have_text("Overview")
    for name in ("Agents", "Tasks", "Workspace"):
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("tab", name=name)).to_be_focused()
        expect(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tabpanel", name="Workspace")).to_be_visible()
    expect(page.get_by_text("Chain verified")).to_be_visible()
    expect(page.get_by_role("heading", name="Budget and spend")).to_be_visible()
    screenshots.take(page, "dashboard-workspace")
    page.keyboard.press("Home")
    expect(page.get_by_role("tab", name="Overview")).to_have_attribute("aria-selected", "true")


def test_every_view_fits_a_phone_screen(
    page: Page, server: ServerProc, screenshots: Screenshots
) -> None:
    assert server.token is not None
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    sign_in(page, server, server.token)
    for view in ("Overview", "Agents", "Tasks", "Workspace"):
        page.get_by_role("tab", name=view).click()
        expect(page.get_by_role("tabpanel", name=view)).to_be_visible()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (view, overflow)
    page.get_by_role("tab", name="Overview").click()
    expect(page.locator('[data-stat="pending"]')).to_be_visible()
    screenshots.take(page, "dashboard-phone")
