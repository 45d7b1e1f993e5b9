// The timeline page: a time range in the URL, the lanes chart, and "the cluster at a moment".

import { el, fill, setText, formatClock, badge, ownerClass } from "./dom.js";
import { timelineChart, momentAt, widthOf } from "./charts.js";
import { getJSON } from "./live.js";
import { partitionCells } from "./pages.js";

const REFRESH_MS = 5000;
let current = null;
let lastLoad = 0;
let lastStates = "";

function params() {
  return new URLSearchParams(location.search);
}

function rangeQuery() {
  const p = params();
  const q = new URLSearchParams();
  if (p.get("since")) {
    q.set("since", p.get("since"));
    if (p.get("until")) q.set("until", p.get("until"));
  } else {
    q.set("range", p.get("range") || "15m");
  }
  return q;
}

function isLive() {
  return !params().get("since");
}

async function load() {
  lastLoad = Date.now();
  current = await getJSON(`/api/timeline?${rangeQuery()}`);
  draw();
}

function draw() {
  const at = params().get("at");
  const chart = timelineChart(current, at === null ? null : Number(at), widthOf("timeline-chart"));
  chart.addEventListener("click", (event) => pick(momentAt(chart, event.clientX)));
  fill("timeline-chart", chart);
  setText("range-caption", `${formatClock(current.since, true)} – ${formatClock(current.until, true)}${current.truncated ? " (history truncated)" : ""}`);
  for (const button of document.querySelectorAll("[data-range]")) {
    button.setAttribute("aria-pressed", String(isLive() && (params().get("range") || "15m") === button.dataset.range));
  }
  setInputs(current.since, current.until);
}

function setInputs(since, until) {
  const local = (t) => {
    const d = new Date(t * 1000);
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  };
  const s = document.getElementById("range-since"), u = document.getElementById("range-until");
  if (document.activeElement !== s) s.value = local(since);
  if (document.activeElement !== u) u.value = local(until);
}

function navigate(update) {
  const p = params();
  update(p);
  history.replaceState(null, "", `${location.pathname}?${p}`);
}

async function pick(at) {
  navigate((p) => p.set("at", at.toFixed(3)));
  draw();
  await showMoment(at);
}

async function showMoment(at) {
  const map = await getJSON(`/api/partitions?at=${encodeURIComponent(at)}`);
  const names = new Map(map.nodes.map((n) => [n.id, n.name]));
  document.getElementById("moment").hidden = false;
  fill("moment-time", formatClock(map.at, true));
  document.getElementById("moment-link").href = `/partitions?at=${encodeURIComponent(map.at)}`;
  fill("moment-grid", partitionCells(map.owners, names, null, false));
  const rows = map.nodes.filter((n) => n.state !== "dead" || n.section.length).map((n) => el("tr", {},
    el("td", {}, el("span", { class: `swatch ${ownerClass(n.id)}` }), ` ${n.name} #${n.id}`),
    el("td", {}, badge(n.state)),
    el("td", {}, `${n.section.length} `, el("span", { class: "muted" }, n.section_ranges))));
  document.querySelector("#moment-nodes tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 3, class: "empty" }, "no live nodes then"))]));
}

const STATES = ["initializing", "waiting", "working", "paused"];

function legend() {
  return [
    ...STATES.map((state) => el("li", {}, el("span", { class: `swatch s-${state}` }), state)),
    el("li", {}, "▾ dashed line: rebalance (membership, capacity, P)"),
    el("li", {}, "• dotted line: load move (partitions lent to free slots, or given back)"),
    el("li", {}, el("span", { class: "bad" }, "✕"), " death"),
    el("li", {}, el("span", { class: "swatch s-paused dot" }), " pause or resume asked"),
  ];
}

export function startTimeline() {
  fill("state-legend", legend());
  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => {
      navigate((p) => { p.delete("since"); p.delete("until"); p.set("range", button.dataset.range); });
      load();
    });
  }
  document.getElementById("range-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const since = new Date(document.getElementById("range-since").value).getTime() / 1000;
    const until = new Date(document.getElementById("range-until").value).getTime() / 1000;
    if (!(since < until)) return;
    navigate((p) => { p.delete("range"); p.set("since", since); p.set("until", until); });
    load();
  });
  load();
  window.addEventListener("resize", () => current && draw());
  const at = params().get("at");
  if (at !== null) showMoment(Number(at));
}

// Called with each overview: a preset range follows the clock, and redraws at once when any
// node changes state.
export function onOverview(o) {
  if (!isLive() || !current) return;
  const states = o.nodes.map((n) => `${n.id}:${n.state}`).join(",");
  if (states !== lastStates || Date.now() - lastLoad > REFRESH_MS) {
    lastStates = states;
    load();
  }
}
