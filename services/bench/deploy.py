"""``wsched bench-deploy``: how fast pipelines are deployed with Helm, and scaled.

Against the real kube-apiserver and helm (no kubelet runs, so the figures are Helm's and
the API server's work, not pods starting): the Helm deployer installs the echo chart for
``pipelines`` pipelines, first one at a time, then all at once as the reconciler does (at
most 8 together); then upgrades, checks (the drift check) and uninstalls them. The
built-in scaler's share is timed too: one round over ``pipelines`` hosted pipelines that
each need a change (read + patch of the scale subresource), and one where none does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from kubernetes import client as k8s

from services.bench.measure import percentile
from services.bench.report import machine
from services.deploy.helm import ChartAllowList, HelmDeployer, HelmOptions, names_from_store
from services.deploy.tenancy import ensure_tenant_role
from services.infra import helm, kube
from services.infra.cache import Cache
from services.scheduler.scaler import Scaler, Workload
from services.scheduler.scaler_adapters import KubeScale
from services.store import migrate
from services.store.control import ControlStore, PipelineSpec
from services.store.tokens import TokenCipher

CHARTS = Path(__file__).resolve().parents[2] / "charts"
ECHO = CHARTS / "examples" / "echo"
#: Deploys under way at once: the reconciler's limit.
CONCURRENCY = 8

Say = Callable[[str], None]


def run(
    cache: Cache, *, pipelines: int, say: Say, cluster: kube.KubeCluster | None = None
) -> dict[str, Any]:
    """``cluster`` given: use it (its namespaces are new ones), else start one."""
    with _quiet("pyhelm3", "wsched", "alembic"):  # a line per helm command drowns the progress
        if cluster is not None:
            return asyncio.run(_run(cache, cluster, pipelines=pipelines, say=say))
        say("starting etcd and kube-apiserver")
        own = kube.KubeCluster(binaries=kube.provision(cache))
        own.start()
        try:
            return asyncio.run(_run(cache, own, pipelines=pipelines, say=say))
        finally:
            own.stop()


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def _run(
    cache: Cache, cluster: kube.KubeCluster, *, pipelines: int, say: Say
) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "pipelines": pipelines}
    with cluster.api_client() as api:
        ensure_tenant_role(api)
    with tempfile.TemporaryDirectory(prefix="wsched-bench-deploy-") as scratch:
        work = Path(scratch)
        engine = sa.create_engine(f"sqlite:///{work / 'control.db'}")
        migrate.upgrade(engine)
        store = ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
        deployer = HelmDeployer(
            options=HelmOptions(
                scheduler="wsched-scheduler:50051",
                base_dir=work,
                charts=ChartAllowList(roots=[CHARTS], repositories=[], base_dir=work),
                work_dir=work / "helm",
                executable=str(helm.provision(cache)),
                kubeconfig=cluster.kubeconfig_path,
                autoscaler="builtin",
            ),
            token_of=store.worker_token,
            names_of=names_from_store(store.pipeline_names),
        )
        report.update(await _deploys(store, deployer, pipelines, say))
        report.update(await _scaling(store, cluster, pipelines, say))
        engine.dispose()
    return report


async def _deploys(
    store: ControlStore, deployer: HelmDeployer, count: int, say: Say
) -> dict[str, Any]:
    tenant, _ = store.create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
    app = store.create_application(tenant_id=tenant.id, name="deploy")
    made = [
        store.create_pipeline(app=app, spec=PipelineSpec(name=f"p{number}", chart=str(ECHO)))[0]
        for number in range(2 * count)
    ]
    one_by_one, together = made[:count], made[count:]
    say(f"installing {count} pipelines one at a time")
    sequential = [await _timed(functools.partial(deployer.deploy, p)) for p in one_by_one]
    say(f"installing {count} pipelines at once ({CONCURRENCY} together)")
    started = time.monotonic()
    concurrent = await _bounded([functools.partial(deployer.deploy, p) for p in together])
    wall = time.monotonic() - started
    say("upgrading, checking and uninstalling them")
    changed = [dataclasses.replace(p, values={"agent": {"concurrency": 8}}) for p in one_by_one]
    upgrades = [await _timed(functools.partial(deployer.deploy, p)) for p in changed]
    checks = [await _timed(functools.partial(deployer.in_place, p)) for p in changed]
    removals = [await _timed(functools.partial(deployer.remove, p)) for p in made]
    return {
        "install_s": _summary(sequential),
        "install_concurrent": {
            **_summary(concurrent),
            "wall_s": round(wall, 2),
            "pipelines_per_min": round(count / wall * 60, 1),
        },
        "upgrade_s": _summary(upgrades),
        "drift_check_s": _summary(checks),
        "uninstall_s": _summary(removals),
    }


async def _scaling(
    store: ControlStore, cluster: kube.KubeCluster, count: int, say: Say
) -> dict[str, Any]:
    """One scaler round over ``count`` pipelines: each scaled, then each steady."""
    tenant, _ = store.create_tenant(f"scale-{uuid.uuid4().hex[:8]}")
    namespace = f"wsched-{tenant.name}"
    port = KubeScale(kubeconfig=cluster.kubeconfig_path)
    ids = [f"bench-{number}" for number in range(count)]
    with cluster.api_client() as api:
        _namespace(api, namespace)
        for pipeline_id in ids:
            _deployment(api, namespace, pipeline_id)
    backlog = {pipeline_id: 25 for pipeline_id in ids}

    class Policies:
        async def scaling(self, pipeline_id: str) -> dict[str, Any]:
            return {"tasks_per_replica": 10, "max_replicas": 5}

    scaler = Scaler(
        kube=port,
        workloads=lambda: {
            pid: Workload(namespace=namespace, backlog=backlog[pid], leased=0) for pid in ids
        },
        policies=Policies(),
        interval_s=3600,
    )
    say(f"one scaler round over {count} pipelines, each needing a change")
    started = time.monotonic()
    await scaler.run_once()
    changing = time.monotonic() - started
    say("and one where nothing changes")
    started = time.monotonic()
    await scaler.run_once()
    steady = time.monotonic() - started
    await scaler.stop()
    scaled = scaler.stats().desired
    if sorted(set(scaled.values())) != [3]:
        raise RuntimeError(f"the scaler did not scale every pipeline to 3: {scaled}")
    return {
        "scaler_round_changing_s": round(changing, 3),
        "scaler_round_steady_s": round(steady, 4),
    }


def _namespace(api: k8s.ApiClient, name: str) -> None:
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))


def _deployment(api: k8s.ApiClient, namespace: str, pipeline_id: str) -> None:
    """A minimal Deployment labelled as pipeline-lib labels a pipeline's workers."""
    labels = {"app": pipeline_id}
    body = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(
            name=pipeline_id, labels={**labels, "wsched.io/pipeline-id": pipeline_id}
        ),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="pause")]),
            ),
        ),
    )
    k8s.AppsV1Api(api).create_namespaced_deployment(namespace, body)


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.monotonic()
    await call()
    return time.monotonic() - started


async def _bounded(calls: list[Callable[[], Awaitable[object]]]) -> list[float]:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[object]]) -> float:
        async with slots:
            return await _timed(call)

    return list(await asyncio.gather(*(one(call) for call in calls)))


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(seconds, 0.5), 2),
        "max": round(max(seconds), 2),
    }
