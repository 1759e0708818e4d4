"""The API over SQLite with in-memory Kafka and deployer ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.api.limits import Limits
from services.deploy.ports import NoopDeployer
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from tests.unit.services.api.harness import Api, migrated, running_api, settings_for

#: Small bounds so that tests reach them with small bodies; fast reconciler retries.
LIMITS = Limits(
    max_task_data_bytes=1024,
    max_request_bytes=64 * 1024,
    max_batch_items=50,
    reconcile_attempts=2,
    reconcile_backoff_s=0.01,
    reconcile_interval_s=3600,
    # Short enough that a generated ``?wait=`` or event stream never holds a test up.
    max_wait_s=0.2,
    default_stream_s=0.05,
    max_stream_s=0.2,
)


@dataclass(kw_only=True)
class Fakes:
    producer: MemoryProducer
    admin: MemoryTopicAdmin
    deployer: NoopDeployer


@pytest.fixture
def fakes() -> Fakes:
    return Fakes(producer=MemoryProducer(), admin=MemoryTopicAdmin(), deployer=NoopDeployer())


@pytest.fixture
def migrated_sqlite(sqlite_url: str) -> str:
    migrated(sqlite_url)
    return sqlite_url


@pytest.fixture
async def api(migrated_sqlite: str, fakes: Fakes) -> AsyncIterator[Api]:
    async with running_api(
        settings_for(migrated_sqlite),
        limits=LIMITS,
        producer=fakes.producer,
        admin=fakes.admin,
        deployer=fakes.deployer,
    ) as running:
        yield running
