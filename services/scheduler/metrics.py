"""Prometheus metrics of a scheduler replica, and its small HTTP endpoint.

Per-pipeline figures are read at scrape time from the snapshots the grains publish (never
from a grain's live state, which only its actor may touch) and from the forwarders'
counters, so the hot path only counts in plain integers; a replica exports only the
pipelines it hosts and the series of a pipeline vanish when its grain moves away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.pipeline.model import GrainKey, GrainSnapshot
from actors.runtime import KindStats
from services.scheduler.forwarder import ForwarderStats
from services.scheduler.scaler import ScalerStats
from services.scheduler.shard_forwarder import ShardStats
from services.scheduler.waking import WakingStats

FLUSH_ROW_BUCKETS = (1, 10, 50, 100, 500, 1000, 5000, 20000)
DISPATCH_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
FLUSH_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Sources(Protocol):
    """What the collector reads: the grains' snapshots, their forwarders, the actor system."""

    def snapshots(self) -> Mapping[GrainKey, GrainSnapshot]: ...

    def forwarders(self) -> Mapping[str, ForwarderStats]: ...

    def queue_labels(self) -> Mapping[str, tuple[str, str]]: ...

    def actor_stats(self) -> Mapping[str, KindStats]: ...

    def shard_stats(self) -> Mapping[int, ShardStats]: ...

    @property
    def waking(self) -> WakingStats: ...


class SchedulerCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        snapshots = dict(self._sources.snapshots())
        yield from self._grain_metrics(snapshots)
        yield self._queue_length(snapshots, dict(self._sources.queue_labels()))
        yield from self._forwarder_metrics(dict(self._sources.forwarders()))
        yield from self._actor_metrics(dict(self._sources.actor_stats()))
        yield from self._shard_metrics(dict(self._sources.shard_stats()))
        yield from self._waking_metrics(self._sources.waking)

    def _waking_metrics(self, stats: WakingStats) -> Iterator[Metric]:
        woken = CounterMetricFamily(
            "wsched_grains_woken", "Resting grains activated by their wake-up (timers due)."
        )
        woken.add_metric([], stats.woken)
        failed = CounterMetricFamily(
            "wsched_grain_wakeups_failed", "Wake-ups whose activation failed (tried again)."
        )
        failed.add_metric([], stats.failed)
        yield from (woken, failed)

    def _grain_metrics(self, snapshots: dict[GrainKey, GrainSnapshot]) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "wsched_tasks",
            "Task events handled by this replica's grains, by pipeline.",
            labels=["pipeline", "event"],
        )
        tasks = GaugeMetricFamily(
            "wsched_pipeline_tasks", "Tasks by status, by pipeline.", labels=["pipeline", "status"]
        )
        backlog = GaugeMetricFamily(
            "wsched_pipeline_backlog", "Queued tasks waiting for a worker.", labels=["pipeline"]
        )
        leased = GaugeMetricFamily(
            "wsched_pipeline_leased", "Tasks held by workers now.", labels=["pipeline"]
        )
        idle = GaugeMetricFamily(
            "wsched_idle_grains", "Pipeline grains with nothing to do, ticking slowly."
        )
        for key, snapshot in snapshots.items():
            pipeline = key.pipeline_id
            for event, value in sorted(snapshot.totals.items()):
                events.add_metric([pipeline, event], value)
            for status, value in snapshot.stats.items():
                if status != "backlog":
                    tasks.add_metric([pipeline, status], value)
            backlog.add_metric([pipeline], snapshot.backlog)
            leased.add_metric([pipeline], snapshot.leased)
        idle.add_metric([], sum(1 for snapshot in snapshots.values() if snapshot.idle))
        yield from (events, tasks, backlog, leased, idle)

    def _queue_length(
        self, snapshots: dict[GrainKey, GrainSnapshot], labels: dict[str, tuple[str, str]]
    ) -> Metric:
        """The seed design's autoscaling contract, read by KEDA's Prometheus trigger."""
        gauge = GaugeMetricFamily(
            "server_scheduler_queue_length",
            "Tasks waiting for a worker, by the pipeline's worker Deployment and namespace.",
            labels=["worker", "namespace"],
        )
        for key, snapshot in snapshots.items():
            names = labels.get(key.pipeline_id)
            if names is not None:
                gauge.add_metric(list(names), snapshot.backlog + snapshot.due_soon)
        return gauge

    def _forwarder_metrics(self, forwarders: dict[str, ForwarderStats]) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "wsched_consumer_lag",
            "Records of the pipeline topic not yet admitted.",
            labels=["pipeline", "partition"],
        )
        quarantined = CounterMetricFamily(
            "wsched_quarantined_records", "Undecodable records kept aside.", labels=["pipeline"]
        )
        retries = CounterMetricFamily(
            "wsched_admission_retries", "Admissions retried after a failure.", labels=["pipeline"]
        )
        for pipeline, stats in forwarders.items():
            for partition, value in sorted(stats.lag.items()):
                lag.add_metric([pipeline, str(partition)], value)
            quarantined.add_metric([pipeline], stats.quarantined)
            retries.add_metric([pipeline], stats.retries)
        hosted = GaugeMetricFamily(
            "wsched_hosted_pipelines",
            "Pipelines this replica reads and serves, their grains active or not.",
        )
        hosted.add_metric([], len(forwarders))
        yield from (lag, quarantined, retries, hosted)

    def _shard_metrics(self, shards: dict[int, ShardStats]) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "wsched_shard_lag",
            "Records of the shard's partition of the shared topic not yet routed.",
            labels=["shard"],
        )
        dropped = CounterMetricFamily(
            "wsched_shard_dropped_records",
            "Shared topic records of pipelines that are gone, skipped.",
            labels=["shard"],
        )
        stalls = CounterMetricFamily(
            "wsched_shard_stalls",
            "Grains left behind their shard's live stream (and caught up on their own).",
            labels=["shard"],
        )
        for shard, stats in sorted(shards.items()):
            lag.add_metric([str(shard)], stats.lag)
            dropped.add_metric([str(shard)], stats.dropped)
            stalls.add_metric([str(shard)], stats.stalls)
        yield from (lag, dropped, stalls)

    def _actor_metrics(self, kinds: dict[str, KindStats]) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "wsched_active_grains", "Active actors by kind.", labels=["kind"]
        )
        restarts = CounterMetricFamily(
            "wsched_actor_restarts", "Actor instances discarded after a failure.", labels=["kind"]
        )
        quarantined = GaugeMetricFamily(
            "wsched_actors_quarantined",
            "Actor keys refusing messages after repeated failures.",
            labels=["kind"],
        )
        for kind, stats in kinds.items():
            active.add_metric([kind], stats.active)
            restarts.add_metric([kind], stats.restarts)
            quarantined.add_metric([kind], stats.quarantined)
        yield from (active, restarts, quarantined)


class ScalerSource(Protocol):
    def stats(self) -> ScalerStats: ...


class ScalerCollector(Collector):
    """The built-in scaler's figures; a pipeline's series go when its grain moves away."""

    def __init__(self, scaler: ScalerSource) -> None:
        self._scaler = scaler

    def collect(self) -> Iterator[Metric]:
        stats = self._scaler.stats()
        replicas = GaugeMetricFamily(
            "wsched_scaler_replicas",
            "Replicas the built-in scaler wants for the pipeline's workers.",
            labels=["pipeline"],
        )
        changes = CounterMetricFamily(
            "wsched_scaler_changes",
            "Replica changes the built-in scaler made, by direction (up or down).",
            labels=["pipeline", "direction"],
        )
        errors = CounterMetricFamily(
            "wsched_scaler_errors", "Failed reads or changes of the built-in scaler."
        )
        for pipeline, value in sorted(stats.desired.items()):
            replicas.add_metric([pipeline], value)
        for (pipeline, direction), value in sorted(stats.changes.items()):
            changes.add_metric([pipeline, direction], value)
        errors.add_metric([], stats.errors)
        yield from (replicas, changes, errors)


class GrainMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Histogram(
            "wsched_flush_rows",
            "Rows written per grain flush.",
            buckets=FLUSH_ROW_BUCKETS,
            registry=registry,
        )
        self.seconds = Histogram(
            "wsched_flush_seconds",
            "Duration of a grain flush.",
            buckets=FLUSH_SECONDS_BUCKETS,
            registry=registry,
        )

        self.dispatch = Histogram(
            "wsched_dispatch_seconds",
            "Time from a task becoming ready in its grain to being handed to a worker.",
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self.events_dropped = Counter(
            "wsched_events_dropped",
            "Live-result event batches not published (queue full or broker refusal): "
            "their waiters answer at their timeout instead (D6).",
            registry=registry,
        )

    def observe(self, rows: int, seconds: float) -> None:
        self.rows.observe(rows)
        self.seconds.observe(seconds)


def http_app(registry: CollectorRegistry, ready: Callable[[], bool]) -> FastAPI:
    """``/metrics``, ``/healthz`` and ``/readyz`` (ready once placement has joined)."""
    app = FastAPI(title="Workload Scheduler: scheduler replica", docs_url=None, redoc_url=None)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, str]:
        ok = ready()
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "joining placement"}

    return app
