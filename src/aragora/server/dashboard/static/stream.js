// Server-sent events read with fetch(): EventSource cannot send an Authorization
// header, and the token must not go into the URL. Reconnects with backoff.

import { API } from "./api.js";

const MAX_DELAY_MS = 30000;

function parseBlock(block) {
  let name = "message";
  const data = [];
  let retry = null;
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
  }
  return { name, data: data.length ? data.join("\n") : null, retry };
}

/**
 * Follow the workspace's live feed until `stop()` is called.
 * `onEvent(name, data)` gets every event; `onState(state, detail)` gets
 * "connecting", "live", "reconnecting" (with the delay in ms) and "unauthorized".
 */
export function followEvents(token, { onEvent, onState }) {
  let stopped = false;
  let controller = null;
  let baseDelayMs = 1000;
  let wasLive = false;

  async function connectOnce() {
    controller = new AbortController();
    const response = await fetch(`${API}/events`, {
      headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
    if (response.status === 401) return "unauthorized";
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    wasLive = true;
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.retry !== null) baseDelayMs = event.retry;
        if (event.data !== null) {
          try {
            onEvent(event.name, JSON.parse(event.data));
          } catch (error) {
            console.error("bad event", event.name, error);
          }
        }
      }
    }
  }

  async function run() {
    let delayMs = baseDelayMs;
    while (!stopped) {
      onState("connecting");
      let outcome;
      wasLive = false;
      try {
        outcome = await connectOnce();
      } catch {
        outcome = "failed";
      }
      if (stopped) return;
      if (outcome === "unauthorized") {
        onState("unauthorized");
        return;
      }
      // A stream that was live starts the backoff afresh; failed attempts double it.
      if (wasLive) delayMs = baseDelayMs;
      const wait = Math.round(delayMs * (0.8 + Math.random() * 0.4));
      onState("reconnecting", wait);
      await new Promise((resolve) => setTimeout(resolve, wait));
      if (!wasLive) delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      controller?.abort();
    },
  };
}
