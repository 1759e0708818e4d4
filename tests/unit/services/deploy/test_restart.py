"""The reconciler deploys again the workers that are no longer in place: after a restart of
the API, what only lived in it; later, what disappeared behind its back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from actors.clock import FakeClock
from services.api.limits import Limits
from services.api.reconciler import Reconciler
from services.deploy.ports import DeployFailed, DeploymentStatus
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from services.store.control import ControlStore, Pipeline
from tests.unit.services.deploy.conftest import new_pipeline


class RecordingDeployer:
    """Deploys "locally" and remembers whom; fails those it is told to. Like the local
    deployer, a new instance (a restarted API) has nothing in place."""

    kind = "local"

    def __init__(self) -> None:
        self.deployed: list[str] = []
        self.fail: set[str] = set()
        self.in_place_now: set[str] = set()
        self.cannot_tell = False
        self.checked: list[str] = []

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        if pipeline.id in self.fail:
            raise DeployFailed("chart gone")
        self.deployed.append(pipeline.id)
        self.in_place_now.add(pipeline.id)
        revision = int(pipeline.deployment.get("revision", 0)) + 1
        return DeploymentStatus(status="deployed", revision=revision, deployer="local")

    async def remove(self, pipeline: Pipeline) -> None:
        return None

    async def remove_tenant(self, namespace: str) -> None:
        return None

    async def in_place(self, pipeline: Pipeline) -> bool:
        self.checked.append(pipeline.id)
        if self.cannot_tell:
            raise RuntimeError("the cluster is unreachable")
        return pipeline.id in self.in_place_now


def reconciler(
    store: ControlStore,
    deployer: RecordingDeployer,
    *,
    drift_check_s: float = 3600,
    clock: Callable[[], float] = time.monotonic,
) -> Reconciler:
    return Reconciler(
        store=store,
        admin=MemoryTopicAdmin(),
        deployer=deployer,
        producer=MemoryProducer(),
        limits=Limits(reconcile_interval_s=3600, drift_check_s=drift_check_s),
        clock=clock,
    )


def ready(store: ControlStore, name: str, deployment: dict[str, object]) -> Pipeline:
    pipeline, _ = new_pipeline(store, name)
    assert store.mark_ready(pipeline.id, deployment=deployment)
    found = store.pipeline_by_id(pipeline.id)
    assert found is not None
    return found


async def test_ready_local_pipelines_are_deployed_again_once_at_start(
    store: ControlStore,
) -> None:
    local = ready(store, "local", {"status": "deployed", "revision": 3, "deployer": "local"})
    helm = ready(store, "other", {"status": "deployed", "revision": 1, "detail": ""})
    deployer = RecordingDeployer()
    restarted = reconciler(store, deployer)
    await restarted.scan()
    await restarted.idle()
    assert deployer.deployed == [local.id]  # not the pipeline another deployer put in place
    after = store.pipeline_by_id(local.id)
    assert after is not None and after.deployment["revision"] == 4
    await restarted.scan()
    await restarted.idle()
    assert deployer.deployed == [local.id]  # in place now: not deployed again
    unchanged = store.pipeline_by_id(helm.id)
    assert unchanged is not None and unchanged.deployment == helm.deployment


async def test_a_failed_restart_is_shown_and_tried_again_at_the_next_start(
    store: ControlStore,
) -> None:
    pipeline = ready(store, "p", {"status": "deployed", "revision": 2, "deployer": "local"})
    deployer = RecordingDeployer()
    deployer.fail.add(pipeline.id)
    first = reconciler(store, deployer)
    await first.scan()
    await first.idle()
    failed = store.pipeline_by_id(pipeline.id)
    assert failed is not None
    assert failed.state_reason == "chart gone"
    assert failed.deployment == {
        "status": "failed",
        "revision": 2,
        "detail": "chart gone",
        "deployer": "local",
    }
    deployer.fail.clear()
    second = reconciler(store, RecordingDeployer())
    await second.scan()
    await second.idle()
    fixed = store.pipeline_by_id(pipeline.id)
    assert fixed is not None and fixed.state_reason == "" and fixed.deployment["revision"] == 3


async def test_workers_lost_later_are_deployed_again_at_the_next_drift_check(
    store: ControlStore,
) -> None:
    pipeline = ready(store, "p", {"status": "deployed", "revision": 1, "deployer": "local"})
    deployer = RecordingDeployer()
    deployer.in_place_now.add(pipeline.id)
    watching = reconciler(store, deployer, drift_check_s=0.01)
    await watching.scan()
    await watching.idle()
    assert deployer.deployed == []  # in place: left alone
    deployer.in_place_now.clear()  # e.g. its Helm release was deleted by hand
    await asyncio.sleep(0.02)
    await watching.scan()
    await watching.idle()
    assert deployer.deployed == [pipeline.id]
    after = store.pipeline_by_id(pipeline.id)
    assert after is not None and after.deployment["revision"] == 2


async def test_a_deployer_that_cannot_tell_is_asked_again_at_the_next_pass(
    store: ControlStore,
) -> None:
    pipeline = ready(store, "p", {"status": "deployed", "revision": 1, "deployer": "local"})
    deployer = RecordingDeployer()
    deployer.cannot_tell = True
    watching = reconciler(store, deployer)  # drift checks an hour apart
    await watching.scan()
    await watching.idle()
    assert deployer.deployed == []  # nothing is redeployed on a guess
    deployer.cannot_tell = False
    await watching.scan()  # not an hour later: the failed check is due again at once
    await watching.idle()
    assert deployer.deployed == [pipeline.id]


async def test_drift_checks_follow_the_injected_clock(store: ControlStore) -> None:
    pipeline = ready(store, "p", {"status": "deployed", "revision": 1, "deployer": "local"})
    deployer = RecordingDeployer()
    deployer.in_place_now.add(pipeline.id)
    clock = FakeClock(start_s=1000)
    watching = reconciler(store, deployer, drift_check_s=60, clock=clock.now)
    await watching.scan()
    await watching.idle()
    assert deployer.checked == [pipeline.id]  # the first check is at start
    deployer.in_place_now.clear()  # lost from now on
    await clock.advance(59.9)
    await watching.scan()
    await watching.idle()
    assert deployer.checked == [pipeline.id]  # not due yet: the loss is not seen
    assert deployer.deployed == []
    await clock.advance(0.1)
    await watching.scan()
    await watching.idle()
    assert deployer.checked == [pipeline.id, pipeline.id]
    assert deployer.deployed == [pipeline.id]
