// The job page: rendered by the server; while the job is not final, follow its progress.

import { setText } from "./dom.js";
import { getJSON } from "./live.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function stamp(t) {
  return t === null ? "—" : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

export function followJob() {
  const root = document.getElementById("job");
  if (!root || FINAL.has(root.dataset.state)) return;
  const id = root.dataset.jobId;
  const timer = setInterval(async () => {
    let job;
    try {
      job = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
    } catch {
      return;
    }
    const state = document.getElementById("job-state");
    state.textContent = job.state;
    state.className = `badge s-${job.state}`;
    document.querySelector("#job-progress .done")?.setAttribute("width", (job.progress * 100).toFixed(1));
    setText("job-progress-text", `${Math.round(job.progress * 100)}%`);
    setText("job-progress-message", job.progress_message || "");
    setText("job-attempts", `${job.attempts} of ${job.max_attempts}`);
    setText("job-started", stamp(job.started_at));
    setText("job-finished", stamp(job.finished_at));
    setText("job-node", job.node_id === null ? "—" : String(job.node_id));
    const asked = job.cancel_requested_at !== null;
    setText("job-cancel", asked ? `${stamp(job.cancel_requested_at)} by ${job.cancel_requested_by || "someone"}` : "—");
    document.getElementById("job-cancelling").hidden = !(asked && job.state === "running");
    setText("job-waiting-for", job.waiting_for || "");
    document.getElementById("job-waiting").hidden = job.waiting_for === null;
    if (FINAL.has(job.state)) {
      setText("job-result", job.result === null ? "—" : pretty(job.result));
      setText("job-error", job.error || "—");
      setText("job-traceback", job.traceback || "—");
      root.dataset.state = job.state;
      clearInterval(timer);
    }
  }, 1000);
}
