"""The Helm deployer alone against real helm and a real kube-apiserver: what it does with
releases a dead helm left pending."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from kubernetes import client as k8s

from services.deploy.helm import (
    ChartAllowList,
    HelmDeployer,
    HelmOptions,
    HelmUnavailable,
    names_from_store,
)
from services.deploy.naming import release_name
from services.deploy.ports import DeployFailed
from services.infra.kube import KubeCluster
from services.store import migrate
from services.store.control import ControlStore, Pipeline, PipelineSpec
from services.store.tokens import TokenCipher
from tests.unit.services.deploy.conftest import new_pipeline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def store(tidb_url: str) -> Iterator[ControlStore]:
    engine = sa.create_engine(tidb_url)
    migrate.upgrade(engine)
    yield ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    engine.dispose()


@pytest.fixture
def kube(kube_cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    with kube_cluster.api_client() as api:
        yield api


@pytest.fixture
def deployer(
    store: ControlStore, kube_cluster: KubeCluster, helm_bin: Path, tmp_path: Path
) -> HelmDeployer:
    return HelmDeployer(
        options=HelmOptions(
            scheduler="wsched-scheduler:50051",
            base_dir=REPO,
            charts=ChartAllowList(
                roots=[REPO / "charts", tmp_path / "mine"], repositories=[], base_dir=REPO
            ),
            work_dir=tmp_path,
            executable=str(helm_bin),
            kubeconfig=kube_cluster.kubeconfig_path,
            timeout_s=30,
        ),
        token_of=store.worker_token,
        names_of=names_from_store(store.pipeline_names),
    )


def unique_pipeline(store: ControlStore) -> Pipeline:
    pipeline, _ = new_pipeline(store, f"p{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}")
    return pipeline


def left_pending(api: k8s.ApiClient, namespace: str, release: str, *, age_s: float) -> None:
    """Rewrite the release's record as a helm that died mid-install leaves it."""
    core = k8s.CoreV1Api(api)
    name = f"sh.helm.release.v1.{release}.v1"
    secret = core.read_namespaced_secret(name, namespace)
    assert secret.data is not None and secret.metadata is not None
    # Kubernetes' base64 around helm's base64 of gzipped JSON.
    record: dict[str, Any] = json.loads(
        gzip.decompress(base64.b64decode(base64.b64decode(secret.data["release"])))
    )
    record["info"]["status"] = "pending-install"
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    record["info"]["last_deployed"] = then.isoformat().replace("+00:00", "Z")
    encoded = base64.b64encode(gzip.compress(json.dumps(record).encode())).decode()
    core.patch_namespaced_secret(
        name,
        namespace,
        {
            "metadata": {"labels": {"status": "pending-install"}},
            "data": {"release": base64.b64encode(encoded.encode()).decode()},
        },
    )


async def test_a_release_left_pending_long_ago_is_installed_again(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    pipeline = unique_pipeline(store)
    first = await deployer.deploy(pipeline)
    assert (first.status, first.revision) == ("deployed", 1)
    left_pending(kube, first.namespace, first.release, age_s=3600)
    assert not await deployer.in_place(pipeline)
    again = await deployer.deploy(pipeline)
    # The pending install was uninstalled and the release installed afresh.
    assert (again.status, again.revision) == ("deployed", 1)
    assert await deployer.in_place(pipeline)


async def test_a_recently_pending_release_is_another_operation_and_retried_later(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    pipeline = unique_pipeline(store)
    first = await deployer.deploy(pipeline)
    left_pending(kube, first.namespace, first.release, age_s=1)
    with pytest.raises(HelmUnavailable, match="another helm operation is under way"):
        await deployer.deploy(pipeline)


async def test_names_at_their_longest_make_a_shortened_release_that_installs(
    store: ControlStore, deployer: HelmDeployer, kube: k8s.ApiClient
) -> None:
    """40-character tenant, application and pipeline names: 122 characters joined, so the
    release is cut to Helm's 53 with a hash suffix, and every object name still fits."""
    suffix = dt.datetime.now(dt.UTC).strftime("%H%M%S%f")
    tenant, _ = store.create_tenant(f"t{suffix}".ljust(40, "t"))
    app = store.create_application(tenant_id=tenant.id, name="a" * 40)
    pipeline, _ = store.create_pipeline(
        app=app, spec=PipelineSpec(name="p" * 40, chart="charts/examples/echo")
    )
    status = await deployer.deploy(pipeline)
    assert status.status == "deployed"
    assert len(status.release) == 53
    assert status.release == release_name(tenant.name, app.name, pipeline.name)
    assert status.namespace == f"wsched-{tenant.name}"
    [workers] = (
        k8s.AppsV1Api(kube)
        .list_namespaced_deployment(
            status.namespace, label_selector=f"wsched.io/pipeline-id={pipeline.id}"
        )
        .items
    )
    assert workers.metadata is not None and workers.metadata.name is not None
    assert status.release.startswith(workers.metadata.name)
    assert await deployer.in_place(pipeline)


async def test_pipelines_of_one_chart_deployed_at_once_share_one_build(
    store: ControlStore, deployer: HelmDeployer, tmp_path: Path
) -> None:
    """The first deploys of a local chart with dependencies, all at once: one build of
    its dependencies, and every release installs."""
    pipelines = [unique_pipeline(store) for _ in range(4)]
    statuses = await asyncio.gather(*(deployer.deploy(p) for p in pipelines))
    assert {s.status for s in statuses} == {"deployed"}
    builds = list((tmp_path / "charts").iterdir())
    assert len(builds) == 1
    assert [p.name for p in builds[0].iterdir()] == ["echo"]


async def test_a_chart_gone_from_disk_is_not_in_place_so_its_redeploy_says_why(
    store: ControlStore, deployer: HelmDeployer, tmp_path: Path
) -> None:
    chart = tmp_path / "mine"
    shutil.copytree(REPO / "charts" / "examples" / "echo", chart)
    (chart / "Chart.yaml").write_text(
        (chart / "Chart.yaml")
        .read_text()
        .replace("../../pipeline-lib", str(REPO / "charts" / "pipeline-lib"))
    )
    tenant, _ = store.create_tenant(f"gone{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}")
    app = store.create_application(tenant_id=tenant.id, name="a")
    pipeline, _ = store.create_pipeline(app=app, spec=PipelineSpec(name="p", chart=str(chart)))
    assert (await deployer.deploy(pipeline)).status == "deployed"
    assert await deployer.in_place(pipeline)
    shutil.rmtree(chart)
    assert not await deployer.in_place(pipeline)
    with pytest.raises(DeployFailed, match="neither a local chart"):
        await deployer.deploy(pipeline)
