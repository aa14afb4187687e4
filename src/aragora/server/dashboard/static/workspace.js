// Workspace (admins): quotas and use, budget and spend, rate limits, access rules,
// feature flags, tokens, and the audit trail with the verdict of its chain check.

import { api } from "./api.js";
import { bars } from "./charts.js";
import { badge, empty, formatTime, h, replace, table } from "./dom.js";

const AUDIT_EVENTS_SHOWN = 20;
const ROLES = ["viewer", "submitter", "agent", "operator", "admin"];

function section(title, ...body) {
  const id = `ws-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h3", { id }, title), ...body);
}

function limit(value) {
  return value === null || value === undefined ? "unlimited" : String(value);
}

async function settle(promise) {
  try {
    return { value: await promise };
  } catch (error) {
    return { error };
  }
}

function failed(what, error) {
  return h("p", { class: "error" }, `${what} could not be loaded: ${error.message}`);
}

export class WorkspaceView {
  constructor({ container, me, say }) {
    this.container = container;
    this.me = me;
    this.say = say;
    this.overview = null;
    this.agentCount = null;
    this.issued = null;
  }

  setLive(overview, agentsSection) {
    this.overview = overview && !overview.error ? overview : null;
    if (agentsSection) this.agentCount = agentsSection.agents.length;
  }

  async load() {
    const ws = encodeURIComponent(this.me.workspace);
    const auditVerify = await settle(api("/audit/verify"));
    const head = auditVerify.value?.head_seq ?? 0;
    const [workspace, budget, policies, flags, tokens, audit] = await Promise.all([
      settle(api(`/workspaces/${ws}`)),
      settle(api("/budget")),
      settle(api("/policies")),
      settle(api("/flags")),
      settle(api("/tokens")),
      settle(api(`/audit?after_seq=${Math.max(0, head - AUDIT_EVENTS_SHOWN)}&limit=${AUDIT_EVENTS_SHOWN}`)),
    ]);
    replace(
      this.container,
      h(
        "div",
        { class: "toolbar" },
        h("button", { type: "button", class: "secondary", onclick: () => this.load() }, "Refresh"),
      ),
      h(
        "div",
        { class: "cards" },
        this.quotas(workspace),
        this.spend(budget),
        this.tokens(tokens),
        this.policies(policies),
        this.flags(flags),
        this.audit(auditVerify, audit),
      ),
    );
  }

  quotas({ value, error }) {
    if (error) return section("Quotas and use", failed("Quotas", error));
    const q = value.quotas;
    const counts = this.overview?.counts;
    const rows = [
      ["Agents", limit(q.max_agents), this.agentCount ?? "—"],
      ["Pending tasks", limit(q.max_pending_tasks), counts ? String(counts.pending) : "—"],
      ["Running tasks", limit(q.max_running_tasks), counts ? String(counts.running) : "—"],
      ["Payload size (bytes)", limit(q.max_payload_bytes), "—"],
    ];
    return section(
      "Quotas and use",
      h("p", {}, `Workspace ${value.name}, plan ${value.plan}.`),
      table("Quotas and current use", ["Quota", "Limit", "In use"], rows),
      h("h4", {}, "Rate limits"),
      h("p", {}, `Submits per minute: ${limit(q.max_submits_per_minute)}`),
    );
  }

  spend({ value, error }) {
    if (error) return section("Budget and spend", failed("Spend", error));
    const money = (v) => (v === null || v === undefined ? "none" : v.toFixed(2));
    const sorted = (m) => Object.entries(m).sort((a, b) => b[1] - a[1]);
    return section(
      "Budget and spend",
      h(
        "p",
        {},
        `Period ${value.period}: spent ${money(value.spent)}, reserved ${money(value.reserved)}, budget ${money(value.budget)}.`,
      ),
      h("h4", {}, "Spend by task type"),
      bars(sorted(value.by_task_type), "Spend by task type"),
      h("h4", {}, "Spend by model"),
      bars(sorted(value.by_model), "Spend by model"),
    );
  }

  tokens({ value, error }) {
    if (error) return section("Tokens", failed("Tokens", error));
    const select = h(
      "select",
      { id: "new-token-role", name: "role" },
      ROLES.map((r) => h("option", { value: r, selected: r === "viewer" }, r)),
    );
    const form = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            this.issued = await api("/tokens", { method: "POST", body: { role: select.value } });
            this.say(`Token ${this.issued.token_id} created.`);
          } catch (err) {
            this.say(`The token could not be created: ${err.message}`, true);
          }
          await this.load();
        },
      },
      h("label", { for: "new-token-role" }, "Role"),
      select,
      h("button", { type: "submit" }, "Create token"),
    );
    const issued = this.issued
      ? h(
          "div",
          { class: "notice", role: "status" },
          h("p", {}, `New ${this.issued.role} token — copy it now, it is not shown again:`),
          h("code", { class: "secret" }, this.issued.token),
        )
      : null;
    this.issued = null;
    const rows = value.tokens.map((t) => [
      t.token_id === this.me.token_id ? `${t.token_id} (this page)` : t.token_id,
      t.role,
      formatTime(t.created_at),
      t.revoked_at ? `revoked ${formatTime(t.revoked_at)}` : t.expires_at ? `expires ${formatTime(t.expires_at)}` : "active",
      t.revoked_at
        ? ""
        : h(
            "button",
            {
              type: "button",
              class: "danger",
              "aria-label": `Revoke token ${t.token_id}`,
              onclick: async () => {
                const warning =
                  t.token_id === this.me.token_id
                    ? `Revoke token ${t.token_id}? It is the token this page is signed in with: it stops working at once and you are signed out.`
                    : `Revoke token ${t.token_id}? It stops working at once, open dashboards included.`;
                if (!window.confirm(warning)) return;
                try {
                  await api(`/tokens/${encodeURIComponent(t.token_id)}`, { method: "DELETE" });
                  this.say(`Token ${t.token_id} revoked.`);
                } catch (err) {
                  this.say(`Could not revoke ${t.token_id}: ${err.message}`, true);
                }
                await this.load();
              },
            },
            "Revoke",
          ),
    ]);
    return section(
      "Tokens",
      form,
      issued,
      rows.length
        ? table("Tokens of this workspace", ["Token", "Role", "Created", "State", ""], rows, {
            rowProps: (i) => ({ dataset: { token: value.tokens[i].token_id } }),
          })
        : empty("No token."),
    );
  }

  policies({ value, error }) {
    if (error) return section("Access rules", failed("Access rules", error));
    return section(
      "Access rules",
      h("p", {}, `Version ${value.version}.`),
      value.rules.length
        ? h(
            "ul",
            { class: "rules" },
            value.rules.map((r) =>
              h("li", {}, h("strong", {}, r.rule_id), r.description ? ` — ${r.description}` : "", h("pre", {}, r.text)),
            ),
          )
        : empty("No rule narrows the roles' grants."),
    );
  }

  flags({ value, error }) {
    if (error) return section("Feature flags", failed("Feature flags", error));
    const rows = value.flags.map((f) => [f.key, f.enabled ? "on" : "off", f.default_variant, f.kind, f.description]);
    return section(
      "Feature flags",
      rows.length ? table("Feature flags", ["Flag", "Enabled", "Default", "Kind", "Description"], rows) : empty("No feature flag."),
    );
  }

  audit(verify, page) {
    if (verify.error) return section("Audit log", failed("The audit check", verify.error));
    const v = verify.value;
    const verdict = v.ok
      ? h("p", { dataset: { audit: "ok" } }, badge("pass"), ` Chain verified: ${v.checked} event(s), head ${v.head_seq}.`)
      : h(
          "p",
          { class: "error", dataset: { audit: "broken" } },
          badge("fail"),
          ` Chain broken at event ${v.first_broken_seq}: ${v.reason}`,
        );
    let events;
    if (page.error) events = failed("Audit events", page.error);
    else if (!page.value.events.length) events = empty("No audit event yet.");
    else
      events = table(
        `Newest ${page.value.events.length} event(s)`,
        ["#", "Time", "Who", "Action", "Resource", "Outcome"],
        [...page.value.events]
          .reverse()
          .map((e) => [String(e.seq), formatTime(e.time_ms / 1000), e.principal, e.action, e.resource, e.outcome]),
      );
    return section("Audit log", verdict, events);
  }
}
