// Our own SVG charts: throughput bars, queue depth lines, section sizes and the timeline lanes.
// Each function returns a fresh <svg> that scales to its container's width.

import { svg, ownerClass, formatClock } from "./dom.js";

const DEFAULT_WIDTH = 800;
const TICK_STEPS = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

function scale(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * magnitude >= value) return m * magnitude;
  return 10 * magnitude;
}

// Time ticks at round clock times, about `count` of them.
function timeTicks(since, until, count = 6) {
  const step = TICK_STEPS.find((s) => (until - since) / s <= count) ?? 86400 * 7;
  const ticks = [];
  for (let t = Math.ceil(since / step) * step; t <= until; t += step) ticks.push(t);
  return { ticks, withDate: until - since > 86400 };
}

function timeAxis(x, since, until, y, top) {
  const { ticks, withDate } = timeTicks(since, until);
  return ticks.map((t) => svg("g", {},
    svg("line", { class: "axis", x1: x(t), x2: x(t), y1: top, y2: y }),
    svg("text", { x: x(t), y: y + 14, "text-anchor": "middle" }, formatClock(t, withDate && t % 86400 === 0)),
  ));
}

function frame(width, height, label) {
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, preserveAspectRatio: "xMinYMin meet" });
}

// Draw at the container's own width so that text keeps its size on a phone and a wide screen.
export function widthOf(id) {
  const box = document.getElementById(id);
  return Math.max(300, Math.floor(box?.clientWidth || DEFAULT_WIDTH));
}

// Succeeded (green) with failures (red) stacked on top, one bar per bucket.
export function throughputChart(buckets, { width = DEFAULT_WIDTH, left = 44, height = 170, label = "throughput" } = {}) {
  const root = frame(width, height, label);
  if (!buckets.length) return root;
  const since = buckets[0].start, until = buckets[buckets.length - 1].end;
  const x = scale(since, until, left, width - 8);
  const bottom = height - 22, top = 10;
  const max = niceMax(Math.max(...buckets.map((b) => b.succeeded + b.failed)));
  const y = scale(0, max, bottom, top);
  root.append(...yAxis(y, max, left, width), ...timeAxis(x, since, until, bottom, top));
  for (const b of buckets) {
    const w = Math.max(x(b.end) - x(b.start) - 1, 1);
    if (b.succeeded) root.append(svg("rect", { class: "bar-ok", x: x(b.start), width: w, y: y(b.succeeded), height: bottom - y(b.succeeded) },
      svg("title", {}, `${formatClock(b.start)}: ${b.succeeded} succeeded, ${b.failed} failed`)));
    if (b.failed) root.append(svg("rect", { class: "bar-bad", x: x(b.start), width: w, y: y(b.succeeded + b.failed), height: y(b.succeeded) - y(b.succeeded + b.failed) }));
  }
  return root;
}

function yAxis(y, max, left, width) {
  return [0, max / 2, max].map((v) => svg("g", {},
    svg("line", { class: "axis", x1: left, x2: width - 8, y1: y(v), y2: y(v) }),
    svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, Number.isInteger(v) ? v : v.toFixed(1)),
  ));
}

// Queued (blue, shaded) and running (green) over time.
export function depthChart(buckets, { width = DEFAULT_WIDTH, left = 44, height = 170 } = {}) {
  const root = frame(width, height, "queue depth");
  if (!buckets.length) return root;
  const since = buckets[0].start, until = buckets[buckets.length - 1].end;
  const x = scale(since, until, left, width - 8);
  const bottom = height - 22, top = 10;
  const max = niceMax(Math.max(...buckets.map((b) => Math.max(b.queued, b.running))));
  const y = scale(0, max, bottom, top);
  root.append(...yAxis(y, max, left, width), ...timeAxis(x, since, until, bottom, top));
  const points = (key) => buckets.map((b) => `${x(b.end).toFixed(1)},${y(b[key]).toFixed(1)}`).join(" ");
  root.append(
    svg("polygon", { class: "area-queued", points: `${x(buckets[0].end)},${bottom} ${points("queued")} ${x(until)},${bottom}` }),
    svg("polyline", { class: "line-queued", points: points("queued") }),
    svg("polyline", { class: "line-running", points: points("running") }),
    svg("text", { class: "label", x: width - 8, y: top + 10, "text-anchor": "end" }, `queued ${buckets.at(-1).queued} · running ${buckets.at(-1).running}`),
  );
  return root;
}

// One horizontal bar per live node, coloured as in the partition map.
export function sectionsChart(nodes, partitions, width = DEFAULT_WIDTH) {
  const live = nodes.filter((n) => n.state !== "dead");
  const row = 26, left = Math.min(140, width / 3);
  const root = frame(width, Math.max(live.length, 1) * row + 8, "section sizes");
  const most = Math.max(1, ...live.map((n) => n.section.length));
  const x = scale(0, most, left, width - 60);
  live.forEach((n, i) => {
    const y = 4 + i * row;
    root.append(
      svg("text", { class: "label", x: left - 8, y: y + 16, "text-anchor": "end" }, n.name.length > 18 ? `${n.name.slice(0, 17)}…` : n.name),
      svg("rect", { class: ownerClass(n.id), x: left, y: y + 3, width: Math.max(x(n.section.length) - left, 1), height: row - 8, rx: 3 }),
      svg("text", { class: "label", x: x(n.section.length) + 6, y: y + 16 }, `${n.section.length} (${Math.round((100 * n.section.length) / partitions)}%)`),
    );
  });
  if (!live.length) root.append(svg("text", { x: 8, y: 20 }, "no live nodes"));
  return root;
}

// The timeline: one lane per node, segments coloured by state, rebalances as dashed lines (load
// moves dotted), deaths
// as red marks, the throughput bars aligned underneath on the same time axis.
export function timelineChart(timeline, cursorAt, width = DEFAULT_WIDTH) {
  const lane = 24, gap = 6, left = Math.min(130, width / 4), top = 8;
  const lanesHeight = Math.max(timeline.lanes.length, 1) * (lane + gap);
  const chartTop = top + lanesHeight + 46, chartHeight = 110;
  const height = chartTop + chartHeight + 24;
  const root = frame(width, height, "node states over time");
  const x = scale(timeline.since, timeline.until, left, width - 8);
  root.append(...timeAxis(x, timeline.since, timeline.until, top + lanesHeight + 4, top));
  timeline.lanes.forEach((l, i) => {
    const y = top + i * (lane + gap);
    root.append(svg("rect", { class: "lane-bg", x: left, y, width: width - 8 - left, height: lane }));
    root.append(svg("text", { class: "label", x: left - 8, y: y + 16, "text-anchor": "end" }, l.name.length > 16 ? `${l.name.slice(0, 15)}…` : l.name));
    // A dead node's lane just ends; the red cross marks where.
    for (const s of l.segments.filter((seg) => seg.state !== "dead")) {
      const x0 = x(Math.max(s.start, timeline.since)), x1 = x(Math.min(s.end, timeline.until));
      root.append(svg("rect", { class: `s-${s.state}`, x: x0, y, width: Math.max(x1 - x0, 1), height: lane },
        svg("title", {}, `${l.name}: ${s.state} ${formatClock(s.start)}–${formatClock(s.end)}`)));
    }
  });
  const laneOf = new Map(timeline.lanes.map((l, i) => [l.node_id, i]));
  for (const e of timeline.events) {
    const ex = x(e.at);
    if (e.kind === "rebalance" || e.kind === "load_move") {
      // Membership changes are dashed lines under a triangle; load moves, dotted under a dot.
      const kind = e.kind === "rebalance" ? "rebalance" : "load-move";
      const mark = kind === "rebalance"
        ? svg("path", { class: "rebalance-mark", d: `M${ex - 4},${top - 6} l4,5 l4,-5 z` })
        : svg("circle", { class: "load-move-mark", cx: ex, cy: top - 4, r: 2.5 });
      mark.append(svg("title", {}, `${kind === "rebalance" ? "rebalance" : "load move"} to epoch ${e.epoch} at ${formatClock(e.at)}: ${e.moved ?? "?"} moved; ${e.reason}`));
      root.append(svg("line", { class: kind, x1: ex, x2: ex, y1: top, y2: top + lanesHeight }), mark);
    } else if (laneOf.has(e.node_id)) {
      const y = top + laneOf.get(e.node_id) * (lane + gap);
      if (e.to_state === "dead") {
        root.append(svg("path", { class: "death", d: `M${ex - 5},${y + 5} l10,14 m0,-14 l-10,14` },
          svg("title", {}, `${e.node_name ?? e.node_id} died at ${formatClock(e.at)}: ${e.reason}`)));
      } else if (e.kind === "pause_request") {
        root.append(svg("circle", { class: "pause-mark", cx: ex, cy: y + lane / 2, r: 3.5 },
          svg("title", {}, `${e.node_name ?? e.node_id}: ${e.reason || "pause requested"} at ${formatClock(e.at)}`)));
      }
    }
  }
  const bars = throughputChart(timeline.throughput, { width: width, left, height: chartHeight + 24, label: "throughput" });
  const group = svg("g", { transform: `translate(0 ${chartTop - 10})` }, ...bars.childNodes);
  root.append(svg("text", { class: "label", x: 0, y: chartTop + 4 }, "finished"), group);
  if (!timeline.lanes.length) root.append(svg("text", { x: left, y: top + 16 }, "no node was live in this range"));
  if (cursorAt !== null && cursorAt >= timeline.since && cursorAt <= timeline.until) {
    root.append(svg("line", { class: "cursor", x1: x(cursorAt), x2: x(cursorAt), y1: top - 4, y2: height - 24 }));
  }
  // A transparent layer on top takes clicks; the page turns x back into a moment.
  root.append(svg("rect", { class: "hit", x: left, y: 0, width: width - 8 - left, height: height - 24, "data-since": timeline.since, "data-until": timeline.until }));
  return root;
}

// Map a click on a timeline back to a moment in datastore time.
export function momentAt(svgRoot, clientX) {
  const box = svgRoot.getBoundingClientRect();
  const hit = svgRoot.querySelector(".hit");
  const left = Number(hit.getAttribute("x")), width = Number(hit.getAttribute("width"));
  const since = Number(hit.dataset.since), until = Number(hit.dataset.until);
  const vx = ((clientX - box.left) / box.width) * Number(svgRoot.getAttribute("width"));
  const f = Math.min(Math.max((vx - left) / width, 0), 1);
  return since + f * (until - since);
}
