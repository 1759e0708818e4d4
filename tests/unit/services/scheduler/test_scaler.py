"""The built-in scaler with an in-memory Kubernetes, a dict of workloads and a fake clock."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from actors.clock import FakeClock
from actors.pipeline.model import GrainKey, GrainSnapshot
from services.deploy.kube import KubeUnavailable
from services.scheduler.metrics import ScalerCollector
from services.scheduler.scaler import (
    Scaler,
    Workload,
    build_scaler,
    hosted_workloads,
)
from services.scheduler.scaler_adapters import KubeScale, SqlOwnerCheck
from services.settings import Settings
from services.store import migrate
from services.store.tasks import SqlTaskStore

NS = "wsched-acme"


class FakeKube:
    """Deployments by (namespace, name): the pipeline id they are labelled with, replicas."""

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], tuple[str, int]] = {}
        self.broken: set[str] = set()  # pipeline ids whose calls fail
        self.reads = 0
        self.sets: list[tuple[str, str, int]] = []
        self.closed = False

    def add(self, pipeline_id: str, *, replicas: int = 1, name: str = "", ns: str = NS) -> None:
        self.deployments[(ns, name or f"d-{pipeline_id}")] = (pipeline_id, replicas)

    def replicas(self, pipeline_id: str, *, name: str = "", ns: str = NS) -> int:
        return self.deployments[(ns, name or f"d-{pipeline_id}")][1]

    async def read_replicas(self, namespace: str, pipeline_id: str) -> list[tuple[str, int]]:
        self.reads += 1
        if pipeline_id in self.broken:
            raise ConnectionError("apiserver unreachable")
        return sorted(
            (name, replicas)
            for (ns, name), (pid, replicas) in self.deployments.items()
            if ns == namespace and pid == pipeline_id
        )

    async def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        pipeline_id, _ = self.deployments[(namespace, name)]
        if pipeline_id in self.broken:
            raise ConnectionError("apiserver unreachable")
        self.deployments[(namespace, name)] = (pipeline_id, replicas)
        self.sets.append((namespace, name, replicas))

    def close(self) -> None:
        self.closed = True


class FakePolicies:
    def __init__(self, **scaling: Mapping[str, Any]) -> None:
        self.scaling_of: dict[str, Mapping[str, Any] | None] = dict(scaling)
        self.reads = 0
        self.down = False

    async def scaling(self, pipeline_id: str) -> Mapping[str, Any] | None:
        self.reads += 1
        if self.down:
            raise ConnectionError("database unreachable")
        return self.scaling_of.get(pipeline_id)


class Harness:
    def __init__(self, **scaling: Mapping[str, Any]) -> None:
        self.kube = FakeKube()
        self.policies = FakePolicies(**scaling)
        self.clock = FakeClock(start_s=1000)
        self.hosted: dict[str, Workload] = {}
        self.scaler = Scaler(
            kube=self.kube,
            workloads=lambda: self.hosted,
            policies=self.policies,
            interval_s=5,
            clock=self.clock,
            policy_ttl_s=60,
            resync_s=60,
        )

    def host(self, pipeline_id: str, backlog: int = 0, leased: int = 0) -> None:
        self.hosted[pipeline_id] = Workload(namespace=NS, backlog=backlog, leased=leased)

    async def round(self, after_s: float = 0) -> None:
        await self.clock.advance(after_s)
        await self.scaler.run_once()


FAST = {"tasks_per_replica": 10, "max_replicas": 5, "cooldown_s": 30, "idle_s": 100}


async def test_scales_up_on_backlog_at_once_and_caps_at_max() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=25, leased=10)
    await h.round()
    assert h.kube.replicas("p1") == 4
    h.host("p1", backlog=500)
    await h.round(1)
    assert h.kube.replicas("p1") == 5
    assert h.scaler.stats().desired == {"p1": 5}
    assert h.scaler.stats().changes == {("p1", "up"): 2}


async def test_scale_down_waits_for_the_cooldown() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=50)
    await h.round()
    assert h.kube.replicas("p1") == 5
    h.host("p1", backlog=5)
    await h.round(10)
    await h.round(19.9)
    assert h.kube.replicas("p1") == 5  # 29.9 s after the change
    await h.round(0.1)
    assert h.kube.replicas("p1") == 1
    assert h.scaler.stats().changes == {("p1", "up"): 1, ("p1", "down"): 1}


async def test_scales_to_zero_only_after_idle_s() -> None:
    h = Harness(p1={**FAST, "min_replicas": 0})
    h.kube.add("p1", replicas=0)
    h.host("p1", backlog=3)
    await h.round()
    assert h.kube.replicas("p1") == 1  # work wakes it up at once
    h.host("p1")
    await h.round(5)  # idle from here
    await h.round(99)
    assert h.kube.replicas("p1") == 1
    await h.round(1)
    assert h.kube.replicas("p1") == 0
    assert h.scaler.stats().desired == {"p1": 0}


async def test_a_grain_may_deactivate_only_once_its_workers_are_at_their_minimum() -> None:
    h = Harness(p1={**FAST, "min_replicas": 0}, p2={"keda": {"enabled": True}})
    assert not h.scaler.at_rest("p1")  # not looked at yet
    h.kube.add("p1", replicas=1)
    h.host("p1")
    h.host("p2")
    await h.round()
    assert not h.scaler.at_rest("p1")  # idle, but its worker is still up
    assert h.scaler.at_rest("p2")  # KEDA's: it reads a grain's missing series as 0
    await h.round(100)
    assert h.kube.replicas("p1") == 0 and h.scaler.at_rest("p1")


async def test_work_during_the_idle_period_restarts_it() -> None:
    h = Harness(p1={**FAST, "min_replicas": 0})
    h.kube.add("p1", replicas=1)
    h.host("p1")
    await h.round()
    await h.round(90)
    h.host("p1", leased=1)
    await h.round(5)
    h.host("p1")
    await h.round(5)
    await h.round(99)
    assert h.kube.replicas("p1") == 1
    await h.round(1)
    assert h.kube.replicas("p1") == 0


async def test_keda_pipelines_are_left_alone() -> None:
    h = Harness(p1={"keda": {"enabled": True}, "max_replicas": 5})
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=1000)
    await h.round()
    assert h.kube.replicas("p1") == 1
    assert h.kube.reads == 0
    assert h.scaler.stats().desired == {}


async def test_only_hosted_pipelines_are_scaled() -> None:
    h = Harness(p1=FAST, p2=FAST)
    h.kube.add("p1", replicas=1)
    h.kube.add("p2", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    assert (h.kube.replicas("p1"), h.kube.replicas("p2")) == (3, 1)
    assert h.policies.reads == 1


async def test_a_pipeline_that_moves_away_is_forgotten_and_a_new_owner_waits() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=50)
    await h.round()
    del h.hosted["p1"]  # revoked: the grain moved to another replica
    await h.round(100)
    assert h.scaler.stats().desired == {} and h.scaler.stats().changes == {}
    h.kube.add("p1", replicas=4)  # what the other owner did meanwhile
    h.host("p1", backlog=0)  # ours again
    await h.round(1)
    assert h.kube.replicas("p1") == 4  # a takeover counts as a change: cooldown first
    await h.round(30)
    assert h.kube.replicas("p1") == 1


async def test_errors_do_not_stop_the_round_or_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(p1=FAST, p2=FAST)
    h.kube.add("p1", replicas=1)
    h.kube.add("p2", replicas=1)
    h.host("p1", backlog=30)
    h.host("p2", backlog=20)
    h.kube.broken.add("p1")
    with caplog.at_level(logging.WARNING, logger="wsched.scheduler.scaler"):
        await h.round()
        await h.round(5)
    assert h.kube.replicas("p2") == 2
    assert h.scaler.stats().errors == 2
    assert [r.getMessage() for r in caplog.records] == [
        "pipeline p1: scaling failed, retrying: ConnectionError: apiserver unreachable"
    ]  # once a minute
    h.kube.broken.clear()
    await h.round(5)
    assert h.kube.replicas("p1") == 3


async def test_a_failed_change_is_read_again(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    h.host("p1", backlog=50)
    h.kube.broken.add("p1")
    await h.round(1)
    h.kube.broken.clear()
    reads = h.kube.reads
    await h.round(1)
    assert h.kube.reads == reads + 1
    assert h.kube.replicas("p1") == 5


async def test_a_missing_deployment_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(p1=FAST)
    h.host("p1", backlog=30)
    with caplog.at_level(logging.WARNING, logger="wsched.scheduler.scaler"):
        for _ in range(13):  # 65 s
            await h.round(5)
        h.kube.add("p1", replicas=1)
        await h.round(5)
    assert h.kube.replicas("p1") == 3
    messages = [r.getMessage() for r in caplog.records]
    assert (
        messages
        == [
            f"pipeline p1: no Deployment labelled wsched.io/pipeline-id=p1 in namespace {NS} "
            "yet; not scaled"
        ]
        * 2
    )
    assert h.scaler.stats().errors == 0


async def test_every_deployment_of_the_pipeline_is_scaled() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1, name="a")
    h.kube.add("p1", replicas=2, name="b")
    h.host("p1", backlog=20)
    await h.round()
    assert (h.kube.replicas("p1", name="a"), h.kube.replicas("p1", name="b")) == (2, 2)
    assert h.kube.sets == [(NS, "a", 2)]


async def test_steady_pipelines_cost_no_api_call_until_the_resync() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    for _ in range(10):
        await h.round(5)
    assert h.kube.reads == 1
    h.kube.add("p1", replicas=1)  # scaled by hand
    await h.round(10)  # 60 s since the read
    assert h.kube.reads == 2 and h.kube.replicas("p1") == 3


async def test_policy_is_cached_and_read_again_when_the_pipeline_changes() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    h.policies.scaling_of["p1"] = {**FAST, "tasks_per_replica": 5}
    await h.round(5)
    assert h.kube.replicas("p1") == 3 and h.policies.reads == 1
    h.scaler.invalidate("p1")
    await h.round(5)
    assert h.kube.replicas("p1") == 5 and h.policies.reads == 2
    h.policies.scaling_of["p1"] = {**FAST, "max_replicas": 2}
    await h.round(60)  # the cache expires too
    assert h.kube.replicas("p1") == 2


async def test_a_bad_policy_is_logged_and_not_scaled(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(p1={"max_replicas": 0})
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    with caplog.at_level(logging.WARNING, logger="wsched.scheduler.scaler"):
        await h.round()
        await h.round(60)
    assert h.kube.replicas("p1") == 1 and h.kube.reads == 0
    assert [r.getMessage() for r in caplog.records] == [
        "pipeline p1: not scaled: scaling.max_replicas must be a whole number of at least 1, not 0"
    ]


async def test_an_unreadable_policy_keeps_the_last_one() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    h.policies.down = True
    h.host("p1", backlog=40)
    await h.round(61)
    assert h.kube.replicas("p1") == 4
    assert h.scaler.stats().errors == 1


async def test_a_pipeline_no_longer_ready_is_not_scaled() -> None:
    h = Harness()
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    assert h.kube.replicas("p1") == 1 and h.kube.reads == 0


async def test_the_loop_runs_every_interval_and_stops_cleanly() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    h.scaler.start()
    await h.clock.settle()
    assert h.kube.replicas("p1") == 3
    h.host("p1", backlog=45)
    await h.clock.advance(4.9)
    assert h.kube.replicas("p1") == 3
    await h.clock.advance(0.1)
    assert h.kube.replicas("p1") == 5
    await h.scaler.stop()
    assert h.kube.closed
    h.host("p1", backlog=0)
    await h.clock.advance(600)
    assert h.kube.replicas("p1") == 5


async def test_a_failing_workload_source_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Mapping[str, Workload]:
        raise RuntimeError("boom")

    scaler = Scaler(kube=FakeKube(), workloads=broken, policies=FakePolicies(), interval_s=1)
    with caplog.at_level(logging.ERROR, logger="wsched.scheduler.scaler"):
        await scaler.run_once()
    assert "cannot list the hosted pipelines" in caplog.text


def snapshot(
    key: str, backlog: int, leased: int, epoch: int = 1, due_soon: int = 0
) -> GrainSnapshot:
    return GrainSnapshot(
        key=GrainKey.parse(key),
        epoch=epoch,
        stats={"queued": backlog, "backlog": backlog},
        totals={},
        leased=leased,
        taken_at=0.0,
        due_soon=due_soon,
    )


def test_hosted_workloads_are_the_hosted_grains_with_names() -> None:
    snapshots = [
        snapshot("p1/0", 5, 2, 3),
        snapshot("p1/1", 1, 1, 1),
        snapshot("p2/0", 9, 9),
        snapshot("p3/0", 0, 0, 7, due_soon=4),  # due within the pipeline's lead_s
    ]
    grains = {s.key: s for s in snapshots}
    labels = {"p1": ("t-a-p1", "wsched-t"), "p3": ("t-a-p3", "wsched-t"), "p4": ("x", "y")}
    assert hosted_workloads(grains, labels) == {
        "p1": Workload(
            namespace="wsched-t", backlog=6, leased=3, grains=(("p1/0", 3), ("p1/1", 1))
        ),
        "p3": Workload(namespace="wsched-t", backlog=4, leased=0, grains=(("p3/0", 7),)),
    }


class FakeOwners:
    def __init__(self) -> None:
        self.owned = True
        self.asked: list[tuple[tuple[str, int], ...]] = []

    async def still_owned(self, grains: tuple[tuple[str, int], ...]) -> bool:
        self.asked.append(grains)
        return self.owned


async def test_a_replica_that_lost_the_grain_changes_nothing() -> None:
    """A paused ex-owner wakes up with old figures: the epoch check stops its change."""
    kube, owners = FakeKube(), FakeOwners()
    kube.add("p1", replicas=1)
    hosted = {"p1": Workload(namespace=NS, backlog=30, leased=0, grains=(("p1/0", 4),))}
    scaler = Scaler(
        kube=kube,
        workloads=lambda: hosted,
        policies=FakePolicies(p1=FAST),
        owners=owners,
        interval_s=5,
        clock=FakeClock(start_s=1000),
    )
    owners.owned = False
    await scaler.run_once()
    assert kube.sets == [] and kube.replicas("p1") == 1
    assert owners.asked == [(("p1/0", 4),)]
    assert scaler.stats().changes == {}
    owners.owned = True  # ours again (a new epoch, as the host would report)
    await scaler.run_once()
    assert kube.replicas("p1") == 3


async def test_the_owner_check_reads_the_epochs_grain_writes_are_fenced_by(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    migrate.upgrade(engine)
    store = SqlTaskStore(engine=engine, clock=lambda: dt.datetime.now(dt.UTC))
    check = SqlOwnerCheck(engine=engine)
    try:
        first = await store.claim(grain=GrainKey(pipeline_id="p1"), owner="replica-a")
        assert await check.still_owned((("p1/0", first),))
        second = await store.claim(grain=GrainKey(pipeline_id="p1"), owner="replica-b")
        assert not await check.still_owned((("p1/0", first),))
        assert await check.still_owned((("p1/0", second),))
        assert not await check.still_owned((("p1/0", second), ("p1/1", 1)))
        assert not await check.still_owned(())
    finally:
        engine.dispose()


async def test_metrics() -> None:
    h = Harness(p1=FAST)
    h.kube.add("p1", replicas=1)
    h.host("p1", backlog=30)
    await h.round()
    registry = CollectorRegistry()
    registry.register(ScalerCollector(h.scaler))
    text = generate_latest(registry).decode()
    for line in (
        'wsched_scaler_replicas{pipeline="p1"} 3.0',
        'wsched_scaler_changes_total{direction="up",pipeline="p1"} 1.0',
        "wsched_scaler_errors_total 0.0",
    ):
        assert line in text, text


def test_build_scaler_only_when_builtin() -> None:
    assert build_scaler(settings=Settings(), engine=cast(Any, None), workloads=dict) is None


async def test_an_unreachable_cluster_is_an_error_not_a_crash(tmp_path: Path) -> None:
    settings = Settings(autoscaler="builtin", kubeconfig=tmp_path / "missing")
    assert isinstance(
        build_scaler(settings=settings, engine=cast(Any, None), workloads=dict), Scaler
    )
    scaler = Scaler(
        kube=KubeScale(kubeconfig=settings.kubeconfig),
        workloads=lambda: {"p1": Workload(namespace=NS, backlog=1, leased=0)},
        policies=FakePolicies(p1={}),
        interval_s=1,
    )
    await scaler.run_once()
    assert scaler.stats().errors == 1
    await scaler.stop()


async def test_kube_scale_builds_no_client_until_used(tmp_path: Path) -> None:
    port = KubeScale(kubeconfig=tmp_path / "missing")
    port.close()  # nothing to close
    with pytest.raises(KubeUnavailable, match=f"cannot load the kubeconfig {tmp_path}/missing"):
        await port.read_replicas(NS, "p1")
