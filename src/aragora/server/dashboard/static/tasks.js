// Tasks: a filtered list, and one task's payload, result, attempts and timeline, with
// cancel and retry where the caller's role allows them.

import { api, query } from "./api.js";
import { badge, empty, formatTime, h, json, replace } from "./dom.js";

const LIST_LIMIT = 100;

export class TasksView {
  constructor({ list, detail, filters, me, say }) {
    this.list = list;
    this.detail = detail;
    this.filters = filters;
    this.me = me;
    this.say = say;
    this.openId = null;
    this.digest = new Map();
    this.loading = null;
    this.again = false;
    // Properties, not listeners: a view made at the next sign-in replaces them.
    filters.onchange = () => this.refresh();
    filters.oninput = (event) => {
      if (event.target.name === "task_type") this.refresh();
    };
    filters.onsubmit = (event) => event.preventDefault();
  }

  can(action) {
    return this.me.actions.includes(action);
  }

  /** A `tasks` event: refetch the list, and the open task if it changed. */
  onDigest(section) {
    const next = new Map(section.tasks.map((t) => [t.id, `${t.status}/${t.attempt}`]));
    const openChanged = this.openId && next.get(this.openId) !== this.digest.get(this.openId);
    this.digest = next;
    this.refresh();
    if (openChanged) this.loadDetail(this.openId, { focus: false });
  }

  /** Refetch the list; calls while one is in flight coalesce into one more. */
  async refresh() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      do {
        this.again = false;
        await this.loadList();
      } while (this.again);
    })();
    try {
      await this.loading;
    } finally {
      this.loading = null;
    }
  }

  async loadList() {
    const form = new FormData(this.filters);
    const priority = form.get("priority");
    let page;
    try {
      page = await api(
        `/tasks${query({ status: form.get("status"), task_type: form.get("task_type").trim(), limit: LIST_LIMIT })}`,
      );
    } catch (error) {
      const message =
        error.status === 422 ? "That filter is not valid (a type is letters, digits, . _ : -)." : error.message;
      replace(this.list, h("p", { class: "error" }, `Tasks could not be loaded: ${message}`));
      return;
    }
    const tasks = page.tasks.filter((t) => !priority || t.priority === priority);
    if (!tasks.length) {
      replace(this.list, empty("No task matches these filters."));
      return;
    }
    const rows = tasks.map((t) =>
      h(
        "tr",
        { dataset: { task: t.id }, class: t.id === this.openId ? "selected" : "" },
        h(
          "td",
          {},
          h(
            "button",
            {
              type: "button",
              class: "link",
              "aria-label": `Open task ${t.id}`,
              onclick: () => this.loadDetail(t.id, { focus: true }),
            },
            t.id.slice(0, 12),
          ),
        ),
        h("td", {}, t.task_type),
        h("td", {}, t.priority),
        h("td", { dataset: { col: "status" } }, badge(t.status)),
        h("td", {}, String(t.attempt)),
        h("td", {}, t.agent_id || "—"),
        h("td", {}, formatTime(t.created_at)),
      ),
    );
    replace(
      this.list,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, `${tasks.length} task(s), newest first`),
          h(
            "thead",
            {},
            h("tr", {}, ["Task", "Type", "Priority", "Status", "Attempt", "Agent", "Created"].map((c) => h("th", { scope: "col" }, c))),
          ),
          h("tbody", {}, rows),
        ),
      ),
    );
  }

  async loadDetail(taskId, { focus }) {
    this.openId = taskId;
    let task;
    try {
      task = await api(`/tasks/${encodeURIComponent(taskId)}`);
    } catch (error) {
      this.detail.hidden = false;
      replace(
        this.detail,
        h("h3", { id: "task-detail-title" }, "Task"),
        h("p", { class: "error" }, error.status === 404 ? "This task no longer exists." : error.message),
      );
      return;
    }
    if (this.openId !== taskId) return;
    this.renderDetail(task);
    for (const row of this.list.querySelectorAll("tr[data-task]")) {
      row.classList.toggle("selected", row.dataset.task === taskId);
    }
    if (focus) this.detail.focus();
  }

  renderDetail(task) {
    const actions = [];
    if (this.can("task.cancel") && (task.status === "pending" || task.status === "running")) {
      actions.push(
        h("button", { type: "button", class: "danger", onclick: () => this.act(task, "cancel") }, "Cancel task"),
      );
    }
    if (this.can("task.retry") && task.status === "failed") {
      actions.push(h("button", { type: "button", onclick: () => this.act(task, "retry") }, "Retry task"));
    }
    const attempts = task.errors.length
      ? h(
          "ol",
          { class: "attempts" },
          task.errors.map((e) =>
            h(
              "li",
              { dataset: { attempt: String(e.attempt) } },
              h("strong", {}, `Attempt ${e.attempt}`),
              ` on ${e.agent_id || "no agent"} at ${formatTime(e.at)}: `,
              h("code", {}, e.error),
            ),
          ),
        )
      : empty("No attempt has failed.");
    const timeline = [
      ["Created", task.created_at],
      ["Started (latest attempt)", task.started_at],
      ["Retry not before", task.available_at],
      ["Lease expires", task.lease_expires_at],
      ["Finished", task.finished_at],
    ].filter(([, t]) => t !== null && t !== undefined);
    replace(
      this.detail,
      h("h3", { id: "task-detail-title" }, `Task ${task.id}`),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Status"),
        h("dd", { dataset: { detail: "status" } }, badge(task.status)),
        h("dt", {}, "Type"),
        h("dd", {}, task.task_type),
        h("dt", {}, "Priority"),
        h("dd", {}, task.priority),
        h("dt", {}, "Attempt"),
        h("dd", {}, `${task.attempt} of at most ${task.max_retries + 1}`),
        h("dt", {}, "Agent"),
        h("dd", {}, task.agent_id || "—"),
        h("dt", {}, "Capabilities"),
        h("dd", {}, task.required_capabilities.join(", ") || "—"),
      ),
      actions.length ? h("div", { class: "actions" }, actions) : null,
      h("h4", {}, "Timeline"),
      h("ol", { class: "timeline" }, timeline.map(([label, t]) => h("li", {}, `${label}: ${formatTime(t)}`))),
      h("h4", {}, "Failed attempts"),
      attempts,
      task.error ? h("p", {}, "Last error: ", h("code", {}, task.error)) : null,
      h("h4", {}, "Payload"),
      json(task.payload),
      h("h4", {}, "Result"),
      task.result !== null
        ? json(task.result)
        : empty(["pending", "running"].includes(task.status) ? "No result yet." : "No result."),
    );
    this.detail.hidden = false;
  }

  async act(task, verb) {
    try {
      const updated = await api(`/tasks/${encodeURIComponent(task.id)}/${verb}`, { method: "POST" });
      this.say(`Task ${task.id} ${verb === "cancel" ? "cancelled" : "sent back to the queue"}.`);
      this.renderDetail(updated);
      this.refresh();
    } catch (error) {
      this.say(`Could not ${verb} task ${task.id}: ${error.message}`, true);
    }
  }
}
