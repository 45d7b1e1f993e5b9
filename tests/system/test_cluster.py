"""The whole system with real node processes: kill, stop, pause, and nothing lost or doubled."""

from __future__ import annotations

import signal
from collections import Counter

from shoal.model import EventKind, JobState, NewJob, NodeState
from shoal.store import Store, open_store

from realnodes import Cluster, freeze_outside_a_write, shoal, until


def submit(store: Store, count: int, sleep_s: float) -> list[int]:
    jobs = [NewJob("work", f"[{i}, {sleep_s}]", "{}", max_attempts=5) for i in range(count)]
    return store.submit_jobs(jobs)


def live_nodes(store: Store) -> dict[str, int]:
    return {n.name: n.id for n in store.read_cluster().nodes if n.state is not NodeState.DEAD}


def wait_live(store: Store, names: set[str]) -> dict[str, int]:
    return until(
        lambda: (
            (nodes := live_nodes(store)).keys() >= names
            and all(len(n.section) for n in store.read_cluster().nodes if n.name in names)
            and nodes
        ),
        what=f"nodes {names} live with sections",
    )


def succeeded(store: Store) -> int:
    return store.read_cluster().job_counts.get(JobState.SUCCEEDED, 0)


def all_final(store: Store, ids: list[int]) -> bool:
    counts = store.read_cluster().job_counts
    return sum(counts.get(s, 0) for s in JobState if s.is_final) >= len(ids)


def assert_each_recorded_once(store: Store, ids: list[int]) -> None:
    """Every job succeeded with its own result, and the nodes' applied-outcome counters add up
    to exactly one success per job: no outcome was recorded twice."""
    for job_id in ids:
        job = store.read_job(job_id)
        assert job is not None and job.state is JobState.SUCCEEDED, job
        assert job.result == job.args[0] * 2
    view = store.read_cluster(dead_window_s=3600)
    assert sum(n.processed for n in view.nodes) == len(ids)


def assert_sections_partition_everything(store: Store) -> None:
    view = store.read_cluster()
    sections = [set(n.section) for n in view.nodes if n.state is not NodeState.DEAD]
    assert sum(len(s) for s in sections) == view.partitions
    assert set().union(*sections) == set(range(view.partitions))


def test_sigkilled_node_jobs_are_requeued_and_finish_elsewhere(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    for name in ("a", "b", "c"):
        cluster.start(name, "--concurrency", "4")
    nodes = wait_live(store, {"a", "b", "c"})
    ids = submit(store, 300, 0.1)  # long enough that b surely holds jobs when it is killed
    until(lambda: store.read_node(nodes["b"]).running > 0, what="b running jobs")  # type: ignore[union-attr]
    cluster.processes["b"].send_signal(signal.SIGKILL)
    until(lambda: "b" not in live_nodes(store), timeout_s=15, what="b declared dead")
    until(lambda: all_final(store, ids), timeout_s=120, what="all jobs final")
    assert_each_recorded_once(store, ids)
    assert_sections_partition_everything(store)
    requeued = [j for j in map(store.read_job, ids) if j and j.attempts > 1]
    assert requeued and all(j.claimer != nodes["b"] for j in requeued)


def test_node_stopped_past_its_lease_cannot_overwrite_and_rejoins_as_new(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    cluster.start("a", "--concurrency", "4")
    cluster.start("b", "--concurrency", "4")
    nodes = wait_live(store, {"a", "b"})
    ids = submit(store, 128, 0.3)  # one job per partition, so both sections have work
    until(lambda: store.read_node(nodes["a"]).running > 0, what="a running jobs")  # type: ignore[union-attr]
    if cluster.url.startswith("sqlite"):  # frozen holding the file's write lock, a stops b too
        freeze_outside_a_write(cluster.processes["a"], cluster.url)
    else:
        cluster.processes["a"].send_signal(signal.SIGSTOP)
    until(lambda: store.read_node(nodes["a"]).state is NodeState.DEAD, timeout_s=15, what="a dead")  # type: ignore[union-attr]
    until(lambda: all_final(store, ids), timeout_s=60, what="jobs finished by b")
    cluster.processes["a"].send_signal(signal.SIGCONT)
    rejoined = until(
        lambda: (live := live_nodes(store)).get("a", nodes["a"]) != nodes["a"] and live,
        timeout_s=20,
        what="a registered again under a new id",
    )
    assert rejoined["a"] != nodes["a"]
    assert_each_recorded_once(store, ids)
    assert all(store.read_job(i).claimer == nodes["b"] for i in ids)  # type: ignore[union-attr]
    assert "declared dead" in cluster.log("a")


def test_sigterm_drains_in_flight_jobs_then_leaves_cleanly(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    a = cluster.start("a", "--concurrency", "4")
    cluster.start("b", "--concurrency", "4")
    nodes = wait_live(store, {"a", "b"})
    ids = submit(store, 128, 0.25)  # one job per partition, so both sections have work
    until(lambda: store.read_node(nodes["a"]).running > 0, what="a running jobs")  # type: ignore[union-attr]
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=30) == 0
    record = store.read_node(nodes["a"])
    assert record is not None and record.state is NodeState.DEAD and record.section == ()
    until(lambda: all_final(store, ids), timeout_s=60, what="all jobs final")
    assert_each_recorded_once(store, ids)
    # Drained, not requeued: every job ran exactly once.
    assert Counter(store.read_job(i).attempts for i in ids) == {1: len(ids)}  # type: ignore[union-attr]
    assert_sections_partition_everything(store)


def test_pause_gives_the_section_away_and_resume_takes_one_back(cluster: Cluster) -> None:
    from realnodes import shoal

    store = open_store(cluster.url)
    cluster.start("a")
    cluster.start("b")
    nodes = wait_live(store, {"a", "b"})
    out = shoal("pause", "a", "--db", cluster.url)
    assert out.returncode == 0, out.stderr
    until(lambda: store.read_node(nodes["a"]).state is NodeState.PAUSED, what="a paused")  # type: ignore[union-attr]
    assert store.read_node(nodes["a"]).section == ()  # type: ignore[union-attr]
    ids = submit(store, 30, 0.0)
    until(lambda: all_final(store, ids), what="jobs done by b alone")
    assert all(store.read_job(i).claimer == nodes["b"] for i in ids)  # type: ignore[union-attr]
    assert shoal("resume", str(nodes["a"]), "--db", cluster.url).returncode == 0
    until(lambda: len(store.read_node(nodes["a"]).section) == 64, what="a has a section again")  # type: ignore[union-attr]
    assert_sections_partition_everything(store)


def test_failing_job_is_retried_then_recorded_failed_with_traceback(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    cluster.start("a")
    wait_live(store, {"a"})
    [job_id] = store.submit_jobs([NewJob("flaky", "[7]", "{}", max_attempts=3)])
    job = until(
        lambda: (j := store.read_job(job_id)) is not None and j.state.is_final and j,
        what="flaky job final",
    )
    assert job.state is JobState.FAILED and job.attempts == 3
    assert job.error == "RuntimeError: flaky 7"
    assert "Traceback" in (job.traceback or "") and "systasks.py" in (job.traceback or "")


def test_job_of_a_task_no_node_knows_waits_queued_visibly(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    cluster.start("a")
    wait_live(store, {"a"})
    [job_id] = store.submit_jobs([NewJob("nosuch", "[]", "{}")])
    [probe] = submit(store, 1, 0.0)  # once it has run, the node has looked at its section
    until(lambda: all_final(store, [probe]), what="a job of a task the node has")
    job = store.read_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    shown = shoal("job", str(job_id), "--db", cluster.url)
    assert "waiting_for: a node that registers nosuch: no live node does" in shown.stdout


def test_steady_load_does_not_write_a_history_row_per_job(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    cluster.start("a", "--concurrency", "4")
    nodes = wait_live(store, {"a"})
    ids = submit(store, 400, 0.005)
    until(lambda: all_final(store, ids), timeout_s=60, what="all jobs final")
    transitions = [
        e
        for e in store.read_history(0)
        if e.kind is EventKind.NODE_STATE and e.node_id == nodes["a"]
    ]
    assert len(transitions) <= 5, [(e.from_state, e.to_state) for e in transitions]


def test_jobs_still_running_after_the_grace_period_are_released_uncounted(
    cluster: Cluster,
) -> None:
    store = open_store(cluster.url)
    a = cluster.start("a", "--concurrency", "2", "--grace-s", "0.2")
    nodes = wait_live(store, {"a"})
    ids = submit(store, 4, 30.0)
    until(lambda: store.read_node(nodes["a"]).running == 2, what="a running two jobs")  # type: ignore[union-attr]

    def two_started() -> bool:  # a worker has begun each (the task reports progress first)
        return sum(1 for i in ids if (j := store.read_job(i)) and j.progress == 0.5) == 2

    until(two_started, what="two jobs started in the worker process")
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=30) == 0
    jobs = [store.read_job(i) for i in ids]
    assert all(j is not None and j.state is JobState.QUEUED and j.attempts == 0 for j in jobs)
    assert "released 2 unfinished jobs" in cluster.log("a")
