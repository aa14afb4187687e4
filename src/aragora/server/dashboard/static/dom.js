// Small DOM helpers: elements are built with properties, never from HTML strings, so
// nothing from the API is ever parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** `h("button", {type: "button", onclick}, "Cancel")` */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role" || key === "for" || key === "scope")
      node.setAttribute(key, value === true ? "true" : String(value));
    else node[key] = value;
  }
  return append(node, children);
}

/** An SVG element with attributes. */
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return append(node, children);
}

/** Replace a container's content; a control that had the focus keeps it (a live
 * update must not throw a keyboard user back to the top of the page). */
export function replace(container, ...children) {
  const active = document.activeElement;
  const key =
    active && active !== container && container.contains(active)
      ? active.id || active.getAttribute("aria-label")
      : null;
  container.replaceChildren();
  append(container, children);
  if (key) {
    const again = [...container.querySelectorAll("[id], [aria-label]")].find(
      (node) => node.id === key || node.getAttribute("aria-label") === key,
    );
    again?.focus();
  }
}

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, status.replace("_", "-"));
}

export function formatTime(epochS) {
  if (epochS === null || epochS === undefined) return "—";
  return new Date(epochS * 1000).toLocaleString();
}

export function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return "<1 s";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function ageSince(epochS) {
  return epochS === null || epochS === undefined ? null : Math.max(0, Date.now() / 1000 - epochS);
}

export function json(value) {
  return h("pre", { class: "json" }, value === undefined ? "null" : JSON.stringify(value, null, 2));
}

/** A table with a caption, column headers and rows of cells (nodes or text). */
export function table(caption, columns, rows, { rowProps } = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        rows.map((cells, i) => h("tr", rowProps ? rowProps(i) : {}, cells.map((c) => h("td", {}, c)))),
      ),
    ),
  );
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}
