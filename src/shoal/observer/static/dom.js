// Building the page from data. Every string from the datastore becomes a text node or an
// attribute value set through the DOM, never parsed as HTML, so job arguments show as written.

const SVG_NS = "http://www.w3.org/2000/svg";

// el("li", {class: "x", title: "..."}, child, "text", ...) -> an element; strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) throw new Error("no event handler attributes");
    node.setAttribute(key, value === true ? "" : String(value));
  }
}

// Replace what a container shows; a no-op when the container is not on this page.
export function fill(id, ...children) {
  const target = document.getElementById(id);
  if (target) target.replaceChildren(...children.flat());
  return target;
}

export function setText(id, text) {
  const target = document.getElementById(id);
  if (target) target.textContent = text;
}

// Each node keeps its colour on every page: its id picks one of twelve.
export function ownerClass(nodeId) {
  return nodeId === null || nodeId === undefined ? "o-none" : `o-${nodeId % 12}`;
}

export function formatAge(seconds) {
  const s = Math.max(seconds || 0, 0);
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}

export function formatClock(epochSeconds, withDate = false) {
  const d = new Date(epochSeconds * 1000);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return withDate ? `${d.toLocaleDateString()} ${time}` : time;
}

export function formatCount(n) {
  return Number(n || 0).toLocaleString();
}

export function badge(state) {
  return el("span", { class: `badge s-${state}` }, state);
}

export function timeEl(epochSeconds, withDate = false) {
  return el("time", { datetime: new Date(epochSeconds * 1000).toISOString() }, formatClock(epochSeconds, withDate));
}

export function describeEvent(event) {
  if (event.kind === "rebalance" || event.kind === "load_move") {
    const moved = event.moved === null ? "" : `, ${event.moved} partition${event.moved === 1 ? "" : "s"} moved`;
    return `${event.kind === "rebalance" ? "rebalance" : "load move"} to epoch ${event.epoch}${moved}`;
  }
  const who = event.node_name ?? `node ${event.node_id}`;
  if (event.kind === "pause_request") return `${who}: ${event.reason || "pause requested"}`;
  const from = event.from_state ? `${event.from_state} → ` : "";
  return `${who}: ${from}${event.to_state}`;
}
