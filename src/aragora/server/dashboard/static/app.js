// The dashboard: sign in with a token, then follow the workspace's live feed.

import { renderAgents } from "./agents.js";
import { api, session, setUnauthorizedHandler } from "./api.js";
import { DepthHistory, renderOverview } from "./overview.js";
import { followEvents } from "./stream.js";
import { TasksView } from "./tasks.js";
import { WorkspaceView } from "./workspace.js";

const $ = (id) => document.getElementById(id);

const live = { overview: undefined, agents: undefined };
let me = null;
let stream = null;
let history = new DepthHistory();
let tasksView = null;
let workspaceView = null;

/** Tell the user what an action did: errors in an alert, the rest in a status line. */
function say(message, isError = false) {
  const banner = $("app-error");
  banner.hidden = !isError;
  banner.textContent = isError ? message : "";
  $("notice").textContent = isError ? "" : message;
}

function setConnection(state, detail) {
  const text = {
    connecting: "Connecting to live updates…",
    live: "Live",
    reconnecting: `Connection lost; retrying in ${Math.round((detail || 0) / 1000)} s`,
    unauthorized: "The token was refused.",
  }[state];
  const node = $("connection");
  node.textContent = text;
  node.dataset.state = state;
}

// -- tabs (WAI-ARIA tabs pattern: arrow keys move between tabs, Tab enters the panel)

function tabs() {
  return [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
}

function selectTab(tab, { focus = false } = {}) {
  for (const t of tabs()) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.id === "tab-tasks") tasksView?.refresh();
  if (tab.id === "tab-workspace") workspaceView?.load();
}

function setUpTabs() {
  const list = $("tabs");
  list.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) selectTab(tab);
  });
  list.addEventListener("keydown", (event) => {
    const all = tabs();
    const index = all.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: all.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    selectTab(all[(moves[event.key] + all.length) % all.length], { focus: true });
  });
}

// -- live feed

function onEvent(name, data) {
  if (name === "overview") {
    live.overview = data;
    if (!data.error) history.add(data.queues);
    renderOverview($("overview"), data, history);
    workspaceView?.setLive(data, live.agents);
  } else if (name === "agents") {
    live.agents = data;
    renderAgents($("agents"), data, me, say);
    workspaceView?.setLive(live.overview, data);
  } else if (name === "tasks") {
    tasksView?.onDigest(data);
  }
}

// -- session

function showSignIn(message = "") {
  stream?.stop();
  stream = null;
  me = null;
  $("app").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("connection").textContent = "";
  $("token-input").value = "";
  $("token-input").focus();
}

async function start(token) {
  me = await api("/whoami", { token });
  session.token = token;
  $("who-text").textContent = `Workspace ${me.workspace} · role ${me.role}`;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("tab-workspace").hidden = me.role !== "admin";
  history = new DepthHistory();
  live.overview = undefined;
  live.agents = undefined;
  tasksView = new TasksView({
    list: $("tasks"),
    detail: $("task-detail"),
    filters: $("task-filters"),
    me,
    say,
  });
  workspaceView = me.role === "admin" ? new WorkspaceView({ container: $("workspace"), me, say }) : null;
  if (!me.actions.includes("health.read")) renderOverview($("overview"), null, history);
  if (!me.actions.includes("agent.read")) renderAgents($("agents"), null, me, say);
  selectTab($("tab-overview"));
  tasksView.refresh();
  stream = followEvents(token, {
    onEvent,
    onState: (state, detail) => {
      setConnection(state, detail);
      if (state === "unauthorized") signOut("The server refused the token; sign in again.");
    },
  });
}

function signOut(message = "") {
  session.token = null;
  showSignIn(message);
}

async function main() {
  setUpTabs();
  setUnauthorizedHandler(() => signOut("The server refused the token; sign in again."));
  $("sign-out").addEventListener("click", () => signOut());
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) {
      $("sign-in-error").textContent = "Enter an API token.";
      return;
    }
    $("sign-in-error").textContent = "";
    try {
      await start(token);
    } catch (error) {
      $("sign-in-error").textContent =
        error.status === 401 ? "That token was not accepted." : `Sign-in failed: ${error.message}`;
    }
  });
  const saved = session.token;
  if (saved) {
    try {
      await start(saved);
      return;
    } catch {
      session.token = null;
    }
  }
  showSignIn();
}

main();
