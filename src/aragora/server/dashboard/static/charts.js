// Inline SVG charts: a sparkline and horizontal bars. Each carries a text alternative.

import { h, s } from "./dom.js";

/** A sparkline of `values` (oldest first), labelled for screen readers. */
export function sparkline(values, label, { width = 120, height = 28 } = {}) {
  // One value still draws a (flat) line.
  const points = values.length > 1 ? values : [values[0] ?? 0, values[0] ?? 0];
  const max = Math.max(1, ...points);
  const step = width / (points.length - 1);
  const coords = points.map((v, i) => {
    const x = i * step;
    const y = height - 2 - (v / max) * (height - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  return s(
    "svg",
    {
      class: "sparkline",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": label,
    },
    s("title", {}, label),
    s("polyline", { points: coords.join(" "), fill: "none", "stroke-width": 2 }),
  );
}

/** Horizontal bars for `[name, value]` entries, with the values written out. */
export function bars(entries, label, format = (v) => v.toFixed(2)) {
  if (!entries.length) return h("p", { class: "empty" }, "Nothing spent in this period.");
  const max = Math.max(...entries.map(([, v]) => v), 1e-9);
  const rowHeight = 26;
  const labelWidth = 140;
  const barWidth = 200;
  const width = labelWidth + barWidth + 70;
  const height = entries.length * rowHeight;
  return s(
    "svg",
    {
      class: "bars",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `${label}: ${entries.map(([n, v]) => `${n} ${format(v)}`).join(", ")}`,
    },
    s("title", {}, label),
    entries.map(([name, value], i) => {
      const y = i * rowHeight;
      const w = Math.max(1, (value / max) * barWidth);
      return s(
        "g",
        {},
        s("text", { x: 0, y: y + 17, class: "bar-label" }, name.length > 18 ? `${name.slice(0, 17)}…` : name),
        s("rect", { x: labelWidth, y: y + 5, width: w.toFixed(1), height: rowHeight - 10, rx: 2 }),
        s("text", { x: labelWidth + w + 6, y: y + 17, class: "bar-value" }, format(value)),
      );
    }),
  );
}
