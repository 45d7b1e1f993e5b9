// Starts whatever the current page needs, chosen by <body data-page>.

import { subscribe, getJSON } from "./live.js";
import { renderOverview, renderNodes, renderPartitionMap } from "./pages.js";
import { startTimeline, onOverview as timelineOverview } from "./timeline.js";
import { followJob } from "./job.js";
import { formatClock } from "./dom.js";

const page = document.body.dataset.page;

// Parameters the server found bad (its notice says why): the page goes on without them, and so
// does every later read of the address.
function dropRejected() {
  const rejected = document.body.dataset.rejected;
  if (!rejected) return;
  const p = new URLSearchParams(location.search);
  for (const name of rejected.split(" ")) p.delete(name);
  const query = p.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
}

function startPartitions() {
  const at = new URLSearchParams(location.search).get("at");
  if (at !== null) {
    // A past moment does not change: draw it once, no live updates.
    getJSON(`/api/partitions?at=${encodeURIComponent(at)}`).then((map) => {
      document.getElementById("map-caption").textContent = `The partition map as it was at ${formatClock(map.at, true)} (epoch ${map.epoch ?? "none"}). Outlined cells had just moved.`;
      renderPartitionMap(map);
    });
    return;
  }
  let epoch = null;
  let names = "";
  subscribe((o) => {
    const nowNames = o.nodes.map((n) => `${n.id}:${n.name}`).join(",");
    if (o.epoch !== epoch || nowNames !== names) {
      epoch = o.epoch;
      names = nowNames;
      getJSON("/api/partitions").then(renderPartitionMap);
    }
  });
}

dropRejected();
if (page === "overview") subscribe(renderOverview);
else if (page === "nodes") subscribe(renderNodes);
else if (page === "partitions") startPartitions();
else if (page === "timeline") {
  startTimeline();
  subscribe(timelineOverview);
} else if (page === "job") followJob();
