"""`/metrics`: Prometheus text format, per-task counts, histograms counted once, no job ids."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shoal.store import Store

from cluster import Cluster, submit


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for found, v in samples if all(found.get(k) == x for k, x in labels.items()))


def test_metrics_count_jobs_by_task_state_and_nodes(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha", concurrency=2)
    cluster.pause(cluster.start("beta"))
    submit(obs_store, "resize", "a.png", count=3)
    submit(obs_store, "report", "daily", count=2)
    [first, second] = cluster.running(alpha, 2)
    alpha.stop(wait=False)  # it finishes these two, claims nothing more, and leaves
    cluster.succeed(first.id)
    cluster.fail(second.id, RuntimeError("boom"))
    cluster.stop(alpha)

    metrics = scrape(client)

    assert value(metrics["shoal_jobs"], task="resize", state="succeeded") == 1
    assert value(metrics["shoal_jobs"], task="resize", state="failed") == 1
    assert value(metrics["shoal_jobs"], task="report", state="queued") == 2
    assert value(metrics["shoal_queue_depth"], state="queued") == 3
    assert value(metrics["shoal_nodes"], state="paused") == 1
    assert value(metrics["shoal_partitions"]) == 32
    assert value(metrics["shoal_job_duration_seconds_count"], task="resize") == 2
    assert value(metrics["shoal_job_wait_seconds_count"], task="resize", state="failed") == 1


def test_histograms_count_each_finished_job_once(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha", concurrency=2)
    submit(obs_store, "resize", "a.png", count=4)
    for job in cluster.running(alpha, 2):
        cluster.succeed(job.id)
    assert value(scrape(client)["shoal_job_duration_seconds_count"]) == 2
    assert value(scrape(client)["shoal_job_duration_seconds_count"]) == 2  # not counted again

    for job in cluster.running(alpha, 2):  # the two it claimed next
        cluster.succeed(job.id)
    metrics = scrape(client)
    assert value(metrics["shoal_job_duration_seconds_count"]) == 4
    assert value(metrics["shoal_job_duration_seconds_bucket"], le="+Inf") == 4


def test_no_job_id_is_ever_a_label(obs_store: Store, cluster: Cluster, client: TestClient):
    alpha = cluster.start("alpha")
    submit(obs_store, "resize", "a.png", count=3)
    for job in cluster.running(alpha, 3):
        cluster.succeed(job.id)
    labels = {name for samples in scrape(client).values() for found, _ in samples for name in found}
    assert labels <= {"task", "state", "le"}
