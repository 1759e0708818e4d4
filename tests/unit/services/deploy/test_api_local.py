"""``WSCHED_DEPLOYER=local`` in the API: it runs the workers, stops them when it stops,
and starts them again when it starts."""

from __future__ import annotations

from pathlib import Path

from services.api.limits import Limits
from services.deploy.processes import identity, read_record
from services.infra.process import free_port
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from services.settings import Settings
from tests.unit.services.api.harness import migrated, running_api, settings_for
from tests.unit.services.deploy.conftest import ECHO

LIMITS = Limits(reconcile_attempts=1, reconcile_backoff_s=0.01, reconcile_interval_s=3600)


def local_settings(database_url: str, data_dir: Path) -> Settings:
    return settings_for(database_url).model_copy(
        update={"deployer": "local", "data_dir": data_dir, "grpc_port": free_port()}
    )


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if identity(pid) is not None]


async def test_the_api_owns_the_local_workers_of_its_pipelines(
    sqlite_url: str, tmp_path: Path
) -> None:
    migrated(sqlite_url)
    settings = local_settings(sqlite_url, tmp_path / "data")
    producer, admin = MemoryProducer(), MemoryTopicAdmin()
    async with running_api(settings, limits=LIMITS, producer=producer, admin=admin) as api:
        key = await api.tenant("acme")
        await api.application(key, "a")
        pipeline = await api.pipeline(key, "a", "echo", chart=str(ECHO))
        assert pipeline["state"] == "ready", pipeline
        assert pipeline["deployment"]["deployer"] == "local"
        directory = tmp_path / "data" / "pipelines" / pipeline["id"]
        first = [p.pid for p in read_record(directory)]
        assert len(alive(first)) == 2  # the executor and one agent
    assert alive(first) == []  # stopped with the API
    assert read_record(directory) == []

    async with running_api(settings, limits=LIMITS, producer=producer, admin=admin) as api:
        await api.reconciler.scan()
        await api.settled()
        second = [p.pid for p in read_record(directory)]
        assert len(alive(second)) == 2 and not set(second) & set(first)
        shown = await api.ctx.db(api.store.pipeline_by_id, pipeline["id"])
        assert shown is not None and shown.deployment["revision"] == 2
    assert alive(second) == []


async def test_a_chart_the_local_deployer_cannot_run_fails_the_pipeline_with_the_reason(
    sqlite_url: str, tmp_path: Path
) -> None:
    migrated(sqlite_url)
    settings = local_settings(sqlite_url, tmp_path / "data")
    async with running_api(
        settings, limits=LIMITS, producer=MemoryProducer(), admin=MemoryTopicAdmin()
    ) as api:
        key = await api.tenant("acme")
        await api.application(key, "a")
        failed = await api.pipeline(key, "a", "ocr", chart="oci://registry.example/ocr")
    assert failed["state"] == "failed"
    assert "is not a local directory" in failed["reason"]
