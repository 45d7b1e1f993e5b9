// What each live page draws from the overview and the API. Only DOM calls, never HTML strings.

import { el, fill, setText, ownerClass, formatAge, formatClock, formatCount, badge, timeEl, describeEvent } from "./dom.js";
import { throughputChart, depthChart, sectionsChart, widthOf } from "./charts.js";

const JOB_STATES = ["queued", "claimed", "running", "succeeded", "failed", "cancelled"];
const NODE_STATES = ["initializing", "waiting", "working", "paused", "dead"];

export function renderOverview(o) {
  const live = o.nodes.filter((n) => n.state !== "dead");
  setText("live-nodes", formatCount(live.length));
  setText("nodes-by-state", NODE_STATES.filter((s) => o.nodes_by_state[s]).map((s) => `${o.nodes_by_state[s]} ${s}`).join(" · ") || "no nodes");
  for (const state of ["queued", "running", "succeeded", "failed"]) setText(`count-${state}`, formatCount(o.jobs_by_state[state]));
  setText("count-cancelled", `${formatCount(o.jobs_by_state.cancelled)} cancelled`);
  const waiting = o.oldest_queued_age_s === null ? "nothing waiting" : `oldest waits ${formatAge(o.oldest_queued_age_s)}`;
  const ahead = o.jobs_by_state.claimed ? ` · ${formatCount(o.jobs_by_state.claimed)} claimed ahead` : "";
  setText("oldest-queued", waiting + ahead);
  setText("capacity", `of ${formatCount(live.reduce((sum, n) => sum + n.concurrency, 0))} slots`);
  const lastMinute = o.throughput.filter((b) => b.end > o.now - 60);
  const done = lastMinute.reduce((sum, b) => sum + b.succeeded + b.failed, 0);
  setText("rate", `${(done / 60).toFixed(1)} jobs/s last minute`);
  renderJobsBar(o.jobs_by_state);
  fill("throughput-chart", throughputChart(o.throughput, { width: widthOf("throughput-chart") }));
  fill("depth-chart", depthChart(o.throughput, { width: widthOf("depth-chart") }));
  fill("sections-chart", sectionsChart(o.nodes, o.partitions, widthOf("sections-chart")));
  setText("partition-count", `${o.partitions} partitions · epoch ${o.epoch}`);
  setText("history-from", o.history_from === null ? "no history yet" : `history from ${formatClock(o.history_from, true)}`);
  fill("events", o.events.length ? o.events.map(eventItem) : [el("li", { class: "muted" }, "nothing happened")]);
  renderLimits(o.limits || []);
  renderWithoutNode(o.tasks_without_node || []);
}

// Tasks whose queued jobs wait because no live node registers them; shown only while there are some.
function renderWithoutNode(tasks) {
  const panel = document.getElementById("without-node-panel");
  if (!panel) return;
  panel.hidden = tasks.length === 0;
  fill("without-node", tasks.map((t) => el("li", { "data-task": t.task },
    el("span", { class: "task" }, t.task), el("span", { class: "muted" }, `${formatCount(t.queued)} queued`))));
}

// Each limited task with its use; the panel shows only while some task declares a limit.
function renderLimits(limits) {
  const panel = document.getElementById("limits-panel");
  if (!panel) return;
  panel.hidden = limits.length === 0;
  fill("limits", limits.map((use) => {
    const { task, max_running: maxRunning, max_per_s: maxPerS } = use.limit;
    const full = maxRunning !== null && use.running >= maxRunning;
    return el("tr", { class: full ? "warn" : null },
      el("td", {}, task),
      el("td", { class: "num" }, `${formatCount(use.running)} / ${maxRunning === null ? "—" : formatCount(maxRunning)}`),
      el("td", { class: "num" }, maxPerS === null ? "—" : `${formatCount(use.recent_starts)} / ${maxPerS}`));
  }));
}

function renderJobsBar(counts) {
  const total = JOB_STATES.reduce((sum, s) => sum + (counts[s] || 0), 0);
  fill("jobs-bar", JOB_STATES.filter((s) => counts[s]).map((s) => {
    const part = el("span", { class: `s-${s}`, title: `${s}: ${counts[s]}` });
    part.style.flexGrow = String(counts[s]);
    return part;
  }));
  fill("jobs-legend", JOB_STATES.map((s) => el("li", {}, el("span", { class: `swatch s-${s}` }),
    `${s} ${formatCount(counts[s])}`, total ? el("span", { class: "muted" }, `${Math.round((100 * (counts[s] || 0)) / total)}%`) : null)));
}

export function eventItem(event) {
  const why = event.kind === "pause_request" ? "" : event.reason;
  return el("li", { class: `event ${event.kind}` }, timeEl(event.at),
    el("span", {}, describeEvent(event), why ? el("span", { class: "why" }, ` · ${why}`) : null));
}

export function renderNodes(o) {
  const running = new Map();
  for (const job of o.running_jobs) {
    if (!running.has(job.node_id)) running.set(job.node_id, []);
    running.get(job.node_id).push(job);
  }
  const cards = o.nodes.map((n) => nodeCard(n, running.get(n.id) || []));
  fill("node-cards", cards.length ? cards : [el("p", { class: "notice" }, "No nodes yet. Start one with: shoal node --app yourmodule:app")]);
  // Keep a #node-N link pointing at its card after each redraw.
  if (location.hash && !document.body.dataset.scrolled) {
    document.getElementById(location.hash.slice(1))?.scrollIntoView();
    document.body.dataset.scrolled = "yes";
  }
}

function nodeCard(n, jobs) {
  const state = badge(n.state);
  if (n.pause_requested && n.state !== "paused" && n.state !== "dead") state.textContent = `${n.state} · pausing`;
  return el("article", { class: `node ${n.state}`, id: `node-${n.id}`, "data-node-id": n.id, "data-state": n.state },
    el("header", {}, el("span", { class: `swatch ${ownerClass(n.id)}` }), el("h2", {}, n.name), el("span", { class: "muted" }, `#${n.id}`), state),
    el("dl", {},
      el("dt", {}, "host"), el("dd", {}, `${n.host} · pid ${n.pid}`),
      el("dt", {}, "section"), el("dd", {}, `${n.section.length} partitions`, n.section_ranges ? el("span", { class: "muted" }, ` ${n.section_ranges}`) : null),
      el("dt", {}, "heartbeat"), el("dd", {}, n.state === "dead" ? "—" : `${formatAge(n.heartbeat_age_s)} ago`),
      el("dt", {}, "in state for"), el("dd", {}, formatAge(n.state_age_s)),
      el("dt", {}, "running"), el("dd", {}, `${n.running} of ${n.concurrency}`, n.state === "dead" ? null : el("span", { class: "muted" }, ` · ${n.free_slots} free`)),
      el("dt", {}, "backlog"), el("dd", { class: n.backlog && !n.free_slots ? "warn" : "" }, `${formatCount(n.backlog)} runnable in its section`),
      el("dt", {}, "processed"), el("dd", {}, `${formatCount(n.processed)} done · `, el("span", { class: n.failed ? "bad" : "" }, `${formatCount(n.failed)} failed`)),
      el("dt", {}, "tasks"), el("dd", { class: "task" }, n.tasks.join(", ") || "—"),
    ),
    jobs.length ? el("ul", { class: "jobs-running" }, jobs.map(runningJob)) : null,
  );
}

function runningJob(job) {
  const bar = el("span");
  bar.style.width = `${(job.progress * 100).toFixed(1)}%`;
  return el("li", {},
    el("a", { href: `/jobs/${job.id}` }, `#${job.id}`),
    el("span", { class: "task" }, job.task),
    el("span", { class: "num" }, `${Math.round(job.progress * 100)}%`),
    el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(job.progress * 100) }, bar),
    el("span", { class: "msg" },
      job.cancel_requested ? el("span", { class: "badge s-cancelling" }, "cancel requested") : null,
      job.progress_message || `running ${formatAge(job.running_s)}, attempt ${job.attempts} of ${job.max_attempts}`),
  );
}

// A partition grid: one cell per partition, coloured by owner; `previous` outlines moved cells.
// With `load` (the live map's homes, backlog and oldest waits), a lent cell is striped and a
// cell with runnable jobs says how many and how long the oldest has waited.
export function partitionCells(owners, names, previous, numbered = true, load = null) {
  return owners.map((owner, p) => {
    const moved = previous && previous.length === owners.length && previous[p] !== owner;
    const who = owner === null ? "no owner" : `${names.get(owner) ?? "node"} (#${owner})`;
    const home = load && load.homes.length === owners.length ? load.homes[p] : owner;
    const lent = home !== owner;
    const waiting = load && load.backlog.length === owners.length ? load.backlog[p] : 0;
    const notes = [
      moved ? "moved in the last rebalance" : null,
      lent ? `lent for the load; home ${names.get(home) ?? "node"} (#${home})` : null,
      waiting ? `${waiting}${waiting >= 64 ? "+" : ""} runnable, oldest waiting ${formatAge(load.oldest_wait_s[p] ?? 0)}` : null,
    ].filter(Boolean);
    const classes = `cell ${ownerClass(owner)}${moved ? " moved" : ""}${lent ? " lent" : ""}${waiting ? " waiting" : ""}`;
    return el("div", { class: classes, role: "listitem", title: [`partition ${p}: ${who}`, ...notes].join(", "), "data-owner": owner ?? "", "data-backlog": waiting || "" }, numbered ? String(p) : "");
  });
}

export function renderPartitionMap(map) {
  const names = new Map(map.nodes.map((n) => [n.id, n.name]));
  fill("partition-grid", partitionCells(map.owners, names, map.previous_owners, true, map));
  const counts = new Map();
  for (const owner of map.owners) counts.set(owner, (counts.get(owner) || 0) + 1);
  fill("owner-legend", [...counts.entries()].sort((a, b) => (a[0] ?? -1) - (b[0] ?? -1)).map(([owner, count]) =>
    el("li", {}, el("span", { class: `swatch ${ownerClass(owner)}` }), owner === null ? "no owner" : `${names.get(owner) ?? "node"} #${owner}`, el("span", { class: "muted" }, `${count}`))));
  fill("rebalances", map.rebalances.length ? map.rebalances.map(eventItem) : [el("li", { class: "muted" }, "no rebalance or load move in the last 24 hours")]);
}
