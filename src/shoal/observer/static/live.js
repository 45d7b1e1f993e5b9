// The live connection: one EventSource on /api/events, its state shown in the header dot.

export function subscribe(onOverview) {
  const status = document.getElementById("live-status");
  const mark = (state, why) => {
    if (!status) return;
    status.dataset.state = state;
    status.title = why;
  };
  const source = new EventSource("/api/events");
  source.addEventListener("overview", (event) => {
    mark("live", "live: updated every second");
    onOverview(JSON.parse(event.data));
  });
  source.addEventListener("trouble", (event) => mark("trouble", `datastore trouble: ${event.data}`));
  // EventSource reconnects by itself; the dot says so meanwhile.
  source.addEventListener("error", () => mark("trouble", "reconnecting…"));
  return source;
}

export async function getJSON(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}
