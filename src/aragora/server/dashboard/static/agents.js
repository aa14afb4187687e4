// Agents: what each can do, how it is doing, and (operators) drain or remove it.

import { api } from "./api.js";
import { ageSince, badge, empty, formatAge, h, replace } from "./dom.js";

function canManage(me) {
  return me && (me.role === "operator" || me.role === "admin");
}

export function renderAgents(container, agentsSection, me, say) {
  if (!agentsSection) {
    replace(container, empty("Your role cannot read the agents of this workspace."));
    return;
  }
  const agents = agentsSection.agents;
  if (!agents.length) {
    replace(container, empty("No agent is registered in this workspace."));
    return;
  }
  const manage = canManage(me);
  const columns = ["Agent", "Capabilities", "Model", "Status", "Current tasks", "Error rate", "Breaker", "Last heartbeat"];
  if (manage) columns.push("Actions");
  const act = async (label, call) => {
    try {
      await call();
      say(`${label}: done.`);
    } catch (error) {
      say(`${label} failed: ${error.message}`, true);
    }
  };
  const rows = agents.map((a) => {
    const id = encodeURIComponent(a.agent_id);
    const cells = [
      h("td", { dataset: { col: "agent" } }, a.agent_id),
      h("td", {}, a.capabilities.length ? a.capabilities.join(", ") : "—"),
      h("td", {}, a.model),
      h("td", { dataset: { col: "status" } }, badge(a.status)),
      h("td", {}, `${a.running_task_ids.length} / ${a.max_concurrent_tasks}`),
      h("td", {}, `${(a.error_rate * 100).toFixed(0)}% of ${a.calls_in_window}`),
      h("td", { dataset: { col: "breaker" } }, badge(a.breaker_state)),
      h("td", {}, `${formatAge(ageSince(a.last_heartbeat_at))} ago`),
    ];
    if (manage) {
      cells.push(
        h(
          "td",
          {},
          h(
            "div",
            { class: "actions" },
          // Draining is for a live agent: the route is a heartbeat, which would also
          // mark an offline agent alive again.
          a.status !== "idle" && a.status !== "busy"
            ? null
            : h(
                "button",
                {
                  type: "button",
                  class: "secondary",
                  "aria-label": `Drain ${a.agent_id}`,
                  onclick: () =>
                    act(`Drain ${a.agent_id}`, () =>
                      api(`/agents/${id}/heartbeat`, { method: "POST", body: { status: "draining" } }),
                    ),
                },
                "Drain",
              ),
          h(
            "button",
            {
              type: "button",
              class: "danger",
              "aria-label": `Remove ${a.agent_id}`,
              onclick: () => {
                if (window.confirm(`Remove agent ${a.agent_id}? Its tasks go back to the queue.`)) {
                  act(`Remove ${a.agent_id}`, () => api(`/agents/${id}`, { method: "DELETE" }));
                }
              },
            },
            "Remove",
          ),
          ),
        ),
      );
    }
    return h("tr", { dataset: { agent: a.agent_id } }, cells);
  });
  replace(
    container,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", {}, `${agents.length} agent(s)`),
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows),
      ),
    ),
  );
}
