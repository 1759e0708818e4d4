"""After a restart of the API, the reconciler deploys again what only lived in it."""

from __future__ import annotations

from services.api.limits import Limits
from services.api.reconciler import Reconciler
from services.deploy.ports import DeployFailed, DeploymentStatus
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from services.store.control import ControlStore, Pipeline
from tests.unit.services.deploy.conftest import new_pipeline


class RecordingDeployer:
    """Deploys "locally" and remembers whom; fails those it is told to."""

    def __init__(self) -> None:
        self.deployed: list[str] = []
        self.fail: set[str] = set()

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        if pipeline.id in self.fail:
            raise DeployFailed("chart gone")
        self.deployed.append(pipeline.id)
        revision = int(pipeline.deployment.get("revision", 0)) + 1
        return DeploymentStatus(status="deployed", revision=revision, deployer="local")

    async def remove(self, pipeline: Pipeline) -> None:
        return None


def reconciler(store: ControlStore, deployer: RecordingDeployer) -> Reconciler:
    return Reconciler(
        store=store,
        admin=MemoryTopicAdmin(),
        deployer=deployer,
        producer=MemoryProducer(),
        limits=Limits(reconcile_interval_s=3600),
        restart_deployer="local",
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
    assert deployer.deployed == [local.id]  # once per start, not every pass
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
    second = reconciler(store, deployer)
    await second.scan()
    await second.idle()
    fixed = store.pipeline_by_id(pipeline.id)
    assert fixed is not None and fixed.state_reason == "" and fixed.deployment["revision"] == 3
