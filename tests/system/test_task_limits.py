"""Task limits with real `shoal node` processes: three nodes, a task declared with
`max_running=2` (systasks.narrow), and the datastore never shows more than two of its jobs
running at once, while every job, limited or not, finishes."""

from __future__ import annotations

from shoal.model import JobFilter, JobState, NewJob, TaskLimit
from shoal.store import open_store

from realnodes import Cluster, until


def test_max_running_holds_across_three_real_nodes(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    for name in ("a", "b", "c"):
        cluster.start(name, "--concurrency", "4")
    until(
        lambda: sum(1 for n in store.read_cluster().nodes if n.section) == 3,
        what="three nodes with sections",
    )
    assert [u.limit for u in store.read_task_limits()] == [TaskLimit("narrow", 2, None)]
    narrow = store.submit_jobs([NewJob("narrow", f"[{i}, 0.05]", "{}") for i in range(40)])
    free = store.submit_jobs([NewJob("work", f"[{i}]", "{}") for i in range(20)])
    running = JobFilter(state=JobState.RUNNING, task="narrow")
    samples: list[int] = []
    claimers: set[int] = set()

    def sample_until_done() -> bool:
        now_running = store.list_jobs(running, limit=1000)
        samples.append(len(now_running))
        claimers.update(j.claimer for j in now_running if j.claimer is not None)
        counts = store.count_jobs_by_task()
        return counts.get(("narrow", JobState.SUCCEEDED), 0) == len(narrow) and counts.get(
            ("work", JobState.SUCCEEDED), 0
        ) == len(free)

    until(sample_until_done, timeout_s=60, what="every job done")
    assert max(samples) <= 2, samples
    assert 2 in samples  # the limit is used, not only kept
    assert len(samples) > 20
    assert len(claimers) >= 2  # the limit is shared by the nodes, not one node's own
    assert store.read_task_limits()[0].running == 0
    store.close()
