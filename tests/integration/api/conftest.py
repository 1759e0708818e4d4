"""The API against the real Kafka broker and a fresh real TiDB database per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from kubernetes import client as k8s

from services.api.limits import Limits
from services.infra.kube import KubeCluster
from services.kafka.admin import KafkaTopicAdmin
from services.settings import Settings
from tests.unit.services.api.harness import Api, migrated, running_api, settings_for

REPO = Path(__file__).resolve().parents[3]
SCHEDULER = "wsched-scheduler.wsched.svc:50051"
IMAGE = "registry.example:5000/team/wsched:test"

#: Short pauses between provisioning attempts; no periodic pass during a test.
LIMITS = Limits(reconcile_backoff_s=0.2, reconcile_interval_s=3600)


@pytest.fixture
def tidb_api_url(tidb_url: str) -> str:
    migrated(tidb_url)
    return tidb_url


@pytest.fixture
def topic_admin(kafka_bootstrap: str) -> KafkaTopicAdmin:
    return KafkaTopicAdmin(bootstrap=kafka_bootstrap)


@pytest.fixture
async def real_api(tidb_api_url: str, kafka_bootstrap: str) -> AsyncIterator[Api]:
    """The API with the producer, topic admin and (no-op) deployer it builds itself."""
    settings = settings_for(tidb_api_url, kafka_bootstrap=kafka_bootstrap)
    async with running_api(settings, limits=LIMITS) as api:
        yield api


async def read_partitions(
    bootstrap: str, partitions: list[TopicPartition], *, until: int, timeout_s: float = 20
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``partitions`` from the start, until ``until`` have been read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(timeout_s):
            while len(records) < until:
                batches = await consumer.getmany(timeout_ms=500)
                records.extend(r for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    """How many records the topic holds in all (its partitions' end offsets added up)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum(offsets.values())


# -- the Helm deployer on the real kube-apiserver ------------------------------------------


@pytest.fixture
def helm_settings(
    tidb_api_url: str,
    kafka_bootstrap: str,
    kube_cluster: KubeCluster,
    helm_bin: Path,
    tmp_path: Path,
) -> Settings:
    base = settings_for(tidb_api_url, kafka_bootstrap=kafka_bootstrap)
    return base.model_copy(
        update={
            "deployer": "helm",
            "kubeconfig": kube_cluster.kubeconfig_path,
            "helm_executable": str(helm_bin),
            "workers_scheduler": SCHEDULER,
            "worker_image": IMAGE,
            "autoscaler": "builtin",
            "data_dir": tmp_path / "data",
            # The bundled charts and this test's own (the operator's allow-list).
            "chart_roots": [
                REPO / "charts" / "examples",
                REPO / "charts" / "pipeline-lib",
                tmp_path,
            ],
        }
    )


@pytest.fixture
async def helm_api(helm_settings: Settings) -> AsyncIterator[Api]:
    async with running_api(helm_settings, limits=LIMITS) as api:
        yield api


@pytest.fixture
def kube(kube_cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    with kube_cluster.api_client() as api:
        yield api
