"""The Grafana dashboard cannot rot: every metric its queries name is one our processes
export, under the name Prometheus scrapes (counters with ``_total``, histograms with
``_bucket``, ``_sum`` and ``_count``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from actors.pipeline.model import GrainKey, GrainSnapshot
from actors.runtime import KindStats
from services.api.metrics import ApiMetrics
from services.scheduler.forwarder import ForwarderStats
from services.scheduler.metrics import GrainMetrics, ScalerCollector, SchedulerCollector
from services.scheduler.scaler import ScalerStats
from services.scheduler.shard_forwarder import ShardStats
from services.scheduler.waking import WakingStats

DASHBOARD = (
    Path(__file__).resolve().parents[4]
    / "charts"
    / "workload-scheduler"
    / "dashboards"
    / "wsched.json"
)
#: A metric name in PromQL: ours all start so; PromQL's functions and labels never do.
METRIC = re.compile(r"\b(?:wsched|server_scheduler)_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


class _NoGrains:
    def snapshots(self) -> Mapping[GrainKey, GrainSnapshot]:
        return {}

    def forwarders(self) -> Mapping[str, ForwarderStats]:
        return {}

    def queue_labels(self) -> Mapping[str, tuple[str, str]]:
        return {}

    def actor_stats(self) -> Mapping[str, KindStats]:
        return {}

    def shard_stats(self) -> Mapping[int, ShardStats]:
        return {}

    @property
    def waking(self) -> WakingStats:
        return WakingStats()


class _NoScaling:
    def stats(self) -> ScalerStats:
        return ScalerStats(desired={}, changes={}, errors=0)


def exported() -> set[str]:
    """The series names the API and a scheduler replica export (what /metrics shows)."""
    registry = CollectorRegistry()
    ApiMetrics(registry=registry)
    GrainMetrics(registry)
    collectors: list[Collector] = [SchedulerCollector(_NoGrains()), ScalerCollector(_NoScaling())]
    for collector in collectors:
        registry.register(collector)
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def expressions(node: Any) -> Iterator[str]:
    """Every query of the dashboard: panel targets and template variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition", "query") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    named = {name for expr in expressions(dashboard) for name in METRIC.findall(expr)}
    assert len(named) >= 15  # the queries were found at all
    assert named - exported() == set()


def test_the_dashboard_covers_what_operators_asked_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(expressions(dashboard))
    for metric in (
        "wsched_tasks_total",  # throughput
        "wsched_pipeline_backlog",  # backlog
        "wsched_dispatch_seconds_bucket",  # latency histograms
        "wsched_active_grains",  # replica ownership
        "wsched_deploys_total",  # deploys
        "wsched_scaler_changes_total",  # scaler decisions
    ):
        assert metric in text
    assert dashboard["uid"] and len({p["id"] for p in dashboard["panels"]}) == len(
        dashboard["panels"]
    )


def test_a_misnamed_metric_would_be_caught() -> None:
    assert "wsched_tasks" not in exported()  # a counter is scraped as wsched_tasks_total
    assert "wsched_dispatch_seconds" not in exported()
