// Overview: health per component and instance, throughput, queues, agents by status.

import { sparkline } from "./charts.js";
import { badge, empty, formatAge, h, replace, table } from "./dom.js";

const PRIORITIES = ["critical", "high", "normal", "low"];
const HISTORY_POINTS = 60;

/** Queue depth per priority over the snapshots received, oldest first. */
export class DepthHistory {
  constructor() {
    this.points = Object.fromEntries(PRIORITIES.map((p) => [p, []]));
  }

  add(queues) {
    for (const p of PRIORITIES) {
      const series = this.points[p];
      series.push(queues?.[p]?.depth ?? 0);
      if (series.length > HISTORY_POINTS) series.shift();
    }
  }
}

function card(title, ...body) {
  const id = `card-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h3", { id }, title), ...body);
}

function stat(label, value, testId) {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", { dataset: { stat: testId } }, value));
}

export function renderOverview(container, overview, history) {
  container.setAttribute("aria-busy", "false");
  if (!overview) {
    replace(container, empty("Your role cannot read the workspace's health."));
    return;
  }
  if (overview.error) {
    replace(container, h("p", { class: "error" }, `The control plane could not be read: ${overview.error}`));
    return;
  }
  const checks = overview.checks.map((c) => [
    badge(c.status),
    c.component_id ? h("span", {}, c.name, h("br"), h("code", { class: "id" }, c.component_id)) : c.name,
    c.output || "",
  ]);
  const counts = overview.counts;
  const queues = PRIORITIES.map((p) => [
    p,
    String(overview.queues?.[p]?.depth ?? 0),
    formatAge(overview.queues?.[p]?.oldest_pending_age_s),
    sparkline(history.points[p], `${p} queue depth, last ${history.points[p].length} snapshots`),
  ]);
  const byStatus = overview.agents_by_status || {};
  const agentTotal = Object.values(byStatus).reduce((a, b) => a + b, 0);
  replace(
    container,
    h(
      "div",
      { class: "cards" },
      card(
        "Health",
        h("p", { class: "overall" }, "Overall ", badge(overview.status)),
        table("Health checks, as measured now", ["Status", "Component", "Detail"], checks),
      ),
      card(
        "Throughput",
        h(
          "dl",
          { class: "stats" },
          stat("Tasks per second", overview.tasks_per_s === null ? "—" : overview.tasks_per_s.toFixed(2), "tasks-per-s"),
          stat("Pending", String(counts.pending), "pending"),
          stat("Running", String(counts.running), "running"),
          stat("Completed", String(counts.completed), "completed"),
          stat("Failed", String(counts.failed), "failed"),
          stat("Cancelled", String(counts.cancelled), "cancelled"),
        ),
      ),
      card(
        "Queues",
        h("p", {}, "Oldest pending task: ", h("strong", { dataset: { stat: "oldest" } }, formatAge(overview.oldest_pending_age_s))),
        counts.pending === 0 ? empty("No task is waiting.") : null,
        table("Queue depth by priority", ["Priority", "Depth", "Oldest", "Trend"], queues),
      ),
      card(
        "Agents",
        agentTotal === 0
          ? empty("No agent is registered in this workspace.")
          : h(
              "dl",
              { class: "stats" },
              Object.entries(byStatus).map(([status, n]) => stat(status, String(n), `agents-${status}`)),
            ),
      ),
    ),
  );
}
