"""The replica's per-pipeline metrics, read from published grain snapshots."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, generate_latest

from actors.pipeline.model import GrainKey, GrainSnapshot
from actors.runtime import KindStats
from services.scheduler.forwarder import ForwarderStats
from services.scheduler.metrics import SchedulerCollector
from services.scheduler.shard_forwarder import ShardStats
from services.scheduler.waking import WakingStats

KEY = GrainKey(pipeline_id="p1")


class Sources:
    def __init__(self, snapshots: Mapping[GrainKey, GrainSnapshot]) -> None:
        self._snapshots = snapshots

    def snapshots(self) -> Mapping[GrainKey, GrainSnapshot]:
        return self._snapshots

    def forwarders(self) -> Mapping[str, ForwarderStats]:
        return {"p1": ForwarderStats(quarantined=1, retries=2, lag={0: 3})}

    def queue_labels(self) -> Mapping[str, tuple[str, str]]:
        return {"p1": ("t-a-p1", "wsched-t")}

    def actor_stats(self) -> Mapping[str, KindStats]:
        return {
            "pipeline": KindStats(active=1, activations=1, messages=9, restarts=0, quarantined=0)
        }

    def shard_stats(self) -> Mapping[int, ShardStats]:
        return {4: ShardStats(lag=12, dropped=3, stalls=1)}

    @property
    def waking(self) -> WakingStats:
        return WakingStats(woken=5, forgotten=1, failed=2)


def scrape(snapshots: Mapping[GrainKey, GrainSnapshot]) -> str:
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(Sources(snapshots)))
    return generate_latest(registry).decode()


def test_grain_series_come_from_the_snapshot() -> None:
    snapshot = GrainSnapshot(
        key=KEY,
        epoch=3,
        stats={"queued": 5, "leased": 2, "succeeded": 7, "backlog": 5},
        totals={"admitted": 14, "dispatched": 9},
        leased=2,
        taken_at=0.0,
    )
    text = scrape({KEY: snapshot})
    for line in (
        'wsched_tasks_total{event="admitted",pipeline="p1"} 14.0',
        'wsched_tasks_total{event="dispatched",pipeline="p1"} 9.0',
        'wsched_pipeline_tasks{pipeline="p1",status="queued"} 5.0',
        'wsched_pipeline_tasks{pipeline="p1",status="succeeded"} 7.0',
        'wsched_pipeline_backlog{pipeline="p1"} 5.0',
        'wsched_pipeline_leased{pipeline="p1"} 2.0',
        'server_scheduler_queue_length{namespace="wsched-t",worker="t-a-p1"} 5.0',
        'wsched_consumer_lag{partition="0",pipeline="p1"} 3.0',
        'wsched_active_grains{kind="pipeline"} 1.0',
        'wsched_shard_lag{shard="4"} 12.0',
        'wsched_shard_dropped_records_total{shard="4"} 3.0',
        'wsched_shard_stalls_total{shard="4"} 1.0',
        "wsched_grains_woken_total 5.0",
        "wsched_grain_wakeups_failed_total 2.0",
    ):
        assert line in text
    assert 'status="backlog"' not in text


def test_a_pipeline_without_a_snapshot_has_no_grain_series() -> None:
    text = scrape({})
    assert 'wsched_pipeline_backlog{pipeline="p1"}' not in text
    assert "server_scheduler_queue_length{" not in text


def test_idle_grains_are_counted() -> None:
    def snapshot(pipeline_id: str, *, idle: bool) -> GrainSnapshot:
        key = GrainKey(pipeline_id=pipeline_id)
        return GrainSnapshot(
            key=key, epoch=1, stats={"backlog": 0}, totals={}, leased=0, taken_at=0.0, idle=idle
        )

    snapshots = {s.key: s for s in (snapshot("a", idle=True), snapshot("b", idle=False))}
    assert "wsched_idle_grains 1.0" in scrape(snapshots)
