"""The product as processes: the API and one scheduler replica over real Kafka and TiDB."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.infra.process import Service, free_port, port_open
from services.store import migrate

OPERATOR = "e2e-operator-key"


@dataclass(frozen=True, kw_only=True)
class Stack:
    api: str
    grpc: str
    metrics: str


@pytest.fixture
def stack(kafka_bootstrap: str, tidb_url: str, kafka_group: str, tmp_path: Path) -> Iterator[Stack]:
    engine = sa.create_engine(tidb_url)
    migrate.upgrade(engine)
    engine.dispose()
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "WSCHED_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "WSCHED_DATABASE_URL": tidb_url,
        "WSCHED_OPERATOR_KEY": OPERATOR,
        "WSCHED_HTTP_PORT": str(http_port),
        "WSCHED_GRPC_PORT": str(grpc_port),
        "WSCHED_METRICS_PORT": str(metrics_port),
        "WSCHED_PLACEMENT_GROUP": kafka_group,
        "WSCHED_REPLICA_NAME": f"e2e-{grpc_port}",
        "WSCHED_RECONCILE_INTERVAL_S": "1",
    }
    services = [
        Service(
            name=name,
            argv=[sys.executable, "-m", "services.cli", name],
            log_path=tmp_path / f"{name}.log",
            env=env,
        )
        for name in ("api", "scheduler")
    ]
    for service in services:
        service.start()
    services[0].wait_ready(lambda: port_open(http_port), timeout_s=60)
    services[1].wait_ready(lambda: port_open(grpc_port), timeout_s=60)
    yield Stack(
        api=f"http://127.0.0.1:{http_port}",
        grpc=f"127.0.0.1:{grpc_port}",
        metrics=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    for service in services:
        service.stop()
