"""Prometheus metrics for `/metrics`, read from the datastore at each scrape.

Gauges (jobs by task and state, jobs and nodes by state, oldest queued age) are counted afresh on
every scrape. The duration and wait histograms are cumulative: each scrape reads the jobs that
finished since the previous one (`list_finished`, bounded pages) and adds them, so a histogram
starts from the last hour when the observer starts, as any restarted exporter's counters do.
No job id is ever a label: labels are task names and states only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.model import Job, JobState, NodeState
from shoal.store.port import Store

DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
START_LOOKBACK_S = 3600.0
# Re-read this far behind the newest finish seen: a transaction that stamped its finish time
# earlier may commit later (PostgreSQL's now() is the transaction start), and must not be missed.
OVERLAP_S = 5.0
PAGE = 1000
MAX_PAGES_PER_SCRAPE = 10


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))
    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> None:
        value = max(value, 0.0)
        for index, bound in enumerate(DURATION_BUCKETS_S):
            if value <= bound:
                self.buckets[index] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        pairs = [
            (_bound_text(b), float(n))
            for b, n in zip(DURATION_BUCKETS_S, self.buckets, strict=True)
        ]
        return [*pairs, ("+Inf", float(self.count))]


def _bound_text(bound: float) -> str:
    return str(float(bound))


class ShoalCollector(Collector):
    """Reads the store on each scrape; keeps only the histogram totals between scrapes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._cursor: float | None = None
        self._recent: dict[int, float] = {}  # job id -> finished_at, within the overlap window
        self._durations: dict[tuple[str, str], _Histogram] = {}
        self._waits: dict[tuple[str, str], _Histogram] = {}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._read_finished()
            yield from self._gauges()
            yield self._histogram(
                "shoal_job_duration_seconds",
                "Run time of the final attempt of finished jobs (started to finished).",
                self._durations,
            )
            yield self._histogram(
                "shoal_job_wait_seconds",
                "Time from submit to the start of the final attempt of finished jobs.",
                self._waits,
            )

    def _gauges(self) -> Iterator[Metric]:
        view = self._store.read_cluster()
        by_task = GaugeMetricFamily(
            "shoal_jobs", "Jobs in the datastore by task and state.", labels=["task", "state"]
        )
        for (task, state), count in sorted(self._store.count_jobs_by_task().items()):
            by_task.add_metric([task, state.value], count)
        yield by_task
        depth = GaugeMetricFamily(
            "shoal_queue_depth", "Jobs in the datastore by state.", labels=["state"]
        )
        for job_state in JobState:
            depth.add_metric([job_state.value], view.job_counts.get(job_state, 0))
        yield depth
        nodes = GaugeMetricFamily(
            "shoal_nodes",
            "Nodes by state (dead ones only while recently dead).",
            labels=["state"],
        )
        for node_state in NodeState:
            nodes.add_metric([node_state.value], sum(n.state is node_state for n in view.nodes))
        yield nodes
        yield GaugeMetricFamily(
            "shoal_oldest_queued_age_seconds",
            "Age of the oldest queued job (0 when none is queued).",
            value=view.oldest_queued_age_s or 0.0,
        )
        yield GaugeMetricFamily("shoal_partitions", "Partition count P.", value=view.partitions)
        yield GaugeMetricFamily(
            "shoal_rebalance_epoch", "Rebalances since the cluster began.", value=view.epoch
        )

    def _read_finished(self) -> None:
        if self._cursor is None:
            self._cursor = self._store.now() - START_LOOKBACK_S
        since = self._cursor - OVERLAP_S
        for _ in range(MAX_PAGES_PER_SCRAPE):
            page = self._store.list_finished(since, limit=PAGE)
            for job in page:
                self._count(job)
            if len(page) < PAGE or page[-1].finished_at in (None, since):
                break
            since = page[-1].finished_at or since
        horizon = self._cursor - 2 * OVERLAP_S
        self._recent = {job_id: at for job_id, at in self._recent.items() if at >= horizon}

    def _count(self, job: Job) -> None:
        if job.finished_at is None or job.id in self._recent:
            return
        self._recent[job.id] = job.finished_at
        assert self._cursor is not None
        self._cursor = max(self._cursor, job.finished_at)
        key = (job.task, job.state.value)
        if job.started_at is not None:
            self._durations.setdefault(key, _Histogram()).observe(job.finished_at - job.started_at)
            self._waits.setdefault(key, _Histogram()).observe(job.started_at - job.created_at)

    @staticmethod
    def _histogram(
        name: str, documentation: str, values: dict[tuple[str, str], _Histogram]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["task", "state"])
        for (task, state), hist in sorted(values.items()):
            family.add_metric([task, state], hist.cumulative(), hist.total)
        return family


def metrics_registry(store: Store) -> CollectorRegistry:
    """A registry of its own (not the process-global one), so each app reports only its store."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShoalCollector(store))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
