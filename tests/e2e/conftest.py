"""The product as processes: the API and one scheduler replica over real Kafka and TiDB."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from protos.wsched.v1 import worker_pb2
from services.infra.process import Service, free_port, port_open
from services.store import migrate
from services.worker.client import SchedulerClient

OPERATOR = "e2e-operator-key"


@dataclass(frozen=True, kw_only=True)
class Stack:
    api: str
    grpc: str
    metrics: str


@pytest.fixture
def stack(kafka_bootstrap: str, tidb_url: str, kafka_group: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        kafka_bootstrap=kafka_bootstrap, tidb_url=tidb_url, group=kafka_group, logs=tmp_path
    ) as running:
        yield running


@contextlib.contextmanager
def running_stack(
    *,
    kafka_bootstrap: str,
    tidb_url: str,
    group: str,
    logs: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """``wsched api`` and one ``wsched scheduler`` as processes, with ``env`` added."""
    engine = sa.create_engine(tidb_url)
    migrate.upgrade(engine)
    engine.dispose()
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "WSCHED_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "WSCHED_DATABASE_URL": tidb_url,
        "WSCHED_OPERATOR_KEY": OPERATOR,
        "WSCHED_HTTP_PORT": str(http_port),
        "WSCHED_GRPC_PORT": str(grpc_port),
        "WSCHED_METRICS_PORT": str(metrics_port),
        "WSCHED_PLACEMENT_GROUP": group,
        "WSCHED_REPLICA_NAME": f"e2e-{grpc_port}",
        "WSCHED_RECONCILE_INTERVAL_S": "1",
        **(env or {}),
    }
    services = [
        Service(
            name=name,
            argv=[sys.executable, "-m", "services.cli", name],
            log_path=logs / f"{name}.log",
            env=settings,
        )
        for name in ("api", "scheduler")
    ]
    try:
        for service in services:
            service.start()
        services[0].wait_ready(lambda: port_open(http_port), timeout_s=60)
        services[1].wait_ready(lambda: port_open(grpc_port), timeout_s=60)
        yield Stack(
            api=f"http://127.0.0.1:{http_port}",
            grpc=f"127.0.0.1:{grpc_port}",
            metrics=f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        for service in services:
            service.stop()


def wsched(
    stack: Stack, *args: str, key: str = "", stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WSCHED_API_URL": stack.api,
        "WSCHED_OPERATOR_KEY": OPERATOR,
        "WSCHED_API_KEY": key,
        "COLUMNS": "200",
    }
    if not key:
        env.pop("WSCHED_API_KEY")
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


async def drain(stack: Stack, pipeline_id: str, token: str, count: int) -> None:
    client = SchedulerClient(
        addresses=[stack.grpc], pipeline_id=pipeline_id, token=token, worker="cli-worker"
    )
    seen = 0
    try:
        async with asyncio.timeout(60):
            while seen < count:
                reply = await client.poll(max_tasks=50, wait_ms=2000)
                if reply.tasks:
                    await client.report(
                        [
                            worker_pb2.TaskResult(
                                lease_token=t.lease_token,
                                outcome=worker_pb2.OUTCOME_SUCCEEDED,
                                result=t.data,
                            )
                            for t in reply.tasks
                        ]
                    )
                    seen += len(reply.tasks)
    finally:
        await client.close()
