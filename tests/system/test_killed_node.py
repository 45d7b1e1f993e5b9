"""A node killed outright (SIGKILL) while its worker process holds work that no thread has begun:
that work was recorded as started, so its attempt was charged, yet it never ran. The worker
process, which outlives its node, gives it back at once, uncharged, rather than leaving it to
the node's lease and the attempt lost."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from shoal.model import JobFilter, JobState, NewJob
from shoal.store import open_store

from realnodes import Cluster, until

JOBS = 400
SLEEP_S = 0.004  # tiny jobs: the node starts them as it claims them, ahead of free threads
LEASE_S = 30.0  # far longer than the test waits: nothing here is the lease's doing


def began(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {int(line) for line in path.read_text().split()}


def test_work_a_killed_node_never_began_is_given_back_uncharged(
    cluster: Cluster, tmp_path: Path
) -> None:
    store = open_store(cluster.url)
    path = tmp_path / "began"
    node = cluster.start("a", "--concurrency", "2", lease_s=LEASE_S)
    until(lambda: any(n.name == "a" for n in store.read_cluster().nodes), what="a live")
    jobs = [NewJob("noted", json.dumps([str(path), n, SLEEP_S]), "{}", 1) for n in range(JOBS)]
    ids = store.submit_jobs(jobs)
    index = {job_id: n for n, job_id in enumerate(ids)}
    until(lambda: len(began(path)) >= 60, what="60 jobs begun")
    node.send_signal(signal.SIGKILL)
    node.wait(timeout=10)

    def charged_unrun() -> list[int]:
        ran = began(path)
        held = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=JOBS)
        return [j.id for j in held if index[j.id] not in ran]

    # Right after the kill the node's worker process still holds jobs started ahead of its
    # threads; within seconds none is left running that never began.
    until(lambda: not charged_unrun(), timeout_s=10, what="no job running that never began")
    ran = began(path)
    for job_id in ids:
        job = store.read_job(job_id)
        assert job is not None
        if index[job_id] not in ran:
            assert job.attempts == 0, (job_id, job.state, job.attempts)
            assert job.state in (JobState.QUEUED, JobState.CLAIMED), (job_id, job.state)
