"""Priorities and unique keys with real processes: a real node runs a backlog by priority, and
many processes submitting one key at once (through `shoal submit` and through the Python API)
make exactly one job."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from shoal.model import JobState, NewJob
from shoal.store import Store, open_store

from realnodes import HERE, Cluster, child_env, shoal, until

SUBMITTERS = 6
CLI_SUBMIT = [sys.executable, "-m", "shoal", "submit", "work", "--args", "[1]", "--force"]

# A submitter process: wait for the agreed moment (so that the submits really overlap), then
# submit one keyed job through the Python API and print what the handle says.
API_SUBMITTER = """
import json, sys, time
from systasks import app  # its datastore is SHOAL_DB's
key, at = sys.argv[1], float(sys.argv[2])
app.store.now()  # connect and warm up before the start line
while time.time() < at:
    pass
handle = app.tasks["work"].submit_with((1,), key=key, key_window_s=60)
print(json.dumps([handle.id, handle.created]))
"""


def jobs_of(store: Store) -> int:
    return sum(store.read_cluster().job_counts.values())


def test_a_real_node_runs_a_backlog_highest_priority_first(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    priorities = [(n * 7) % 11 - 5 for n in range(24)]  # -5..5, shuffled, with repeats
    ids = store.submit_jobs(
        [NewJob("stamp", f"[{n}]", "{}", priority=p) for n, p in enumerate(priorities)]
    )
    cluster.start("solo", "--concurrency", "1")
    until(
        lambda: all(j and j.state is JobState.SUCCEEDED for j in map(store.read_job, ids)),
        timeout_s=60,
        what="the backlog done",
    )
    jobs = [j for j in map(store.read_job, ids) if j is not None]
    ran = [j.id for j in sorted(jobs, key=lambda j: j.result)]
    assert ran == [j.id for j in sorted(jobs, key=lambda j: (-j.priority, j.id))]
    shown = json.loads(shoal("job", str(ran[0]), "--json", "--db", cluster.url).stdout)
    assert (shown["priority"], shown["key"]) == (5, None)


def test_processes_submitting_one_key_at_once_make_one_job(db_url: str) -> None:
    store = open_store(db_url)
    cli = [
        subprocess.Popen(
            [*CLI_SUBMIT, "--key", "invoice-42", "--priority", "3", "--db", db_url],
            cwd=HERE,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(SUBMITTERS)
    ]
    at = time.time() + 3.0
    api = [
        subprocess.Popen(
            [sys.executable, "-c", API_SUBMITTER, "invoice-43", str(at)],
            cwd=HERE,
            env={**child_env(), "SHOAL_DB": db_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(SUBMITTERS)
    ]
    outputs = [p.communicate(timeout=60) for p in cli + api]
    assert all(p.returncode == 0 for p in cli + api), outputs
    cli_ids = {out.strip() for out, _ in outputs[:SUBMITTERS]}
    notes = [err for _, err in outputs[:SUBMITTERS] if "already holds key 'invoice-42'" in err]
    assert len(cli_ids) == 1 and len(notes) == SUBMITTERS - 1
    handles = [json.loads(out) for out, _ in outputs[SUBMITTERS:]]
    assert len({job_id for job_id, _ in handles}) == 1
    assert sum(created for _, created in handles) == 1
    assert jobs_of(store) == 2
    [cli_id] = cli_ids
    job = store.read_job(int(cli_id))
    assert job is not None and (job.key, job.priority) == ("invoice-42", 3)
    again = shoal(
        "submit", "work", "--args", "[2]", "--force", "--key", "invoice-43", "--db", db_url
    )
    assert again.stdout.strip() == str(handles[0][0]) and "already holds" in again.stderr
    assert jobs_of(store) == 2
