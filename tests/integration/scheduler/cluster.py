"""Scheduler replicas as real processes, and test workers that keep an execution log."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from protos.wsched.v1 import worker_pb2
from services.bench.measure import scrape
from services.infra.process import Service, free_port, port_open
from services.worker.client import SchedulerClient
from tests.integration.scheduler.conftest import ReadyPipeline


@dataclass(kw_only=True)
class Replica:
    name: str
    kafka_bootstrap: str
    database_url: str
    group: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    service: Service | None = None
    #: Settings of this replica's own, over the ones every replica gets.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            "WSCHED_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "WSCHED_DATABASE_URL": self.database_url,
            "WSCHED_GRPC_PORT": str(self.port),
            "WSCHED_METRICS_PORT": str(self.metrics_port),
            "WSCHED_REPLICA_NAME": self.name,
            "WSCHED_PLACEMENT_GROUP": self.group,
            "WSCHED_LOG_LEVEL": "INFO",
            **self.settings,
        }
        self.service = Service(
            name=self.name,
            argv=[sys.executable, "-m", "services.cli", "scheduler"],
            log_path=self.log_dir / f"{self.name}.log",
            env=env,
        )
        self.service.start()
        self.service.wait_ready(lambda: port_open(self.port), timeout_s=60)

    def _signal(self, signum: int) -> None:
        assert self.service is not None
        self.service.signal(signum)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.service is not None:
            self.service.signal(signal.SIGCONT)
            self.service.stop(grace_s=30)

    def log(self) -> str:
        return self.service.log_tail(400) if self.service else ""

    def counted(self, event: str) -> float:
        """This replica's ``wsched_tasks_total`` of ``event``, over its pipelines."""
        samples = scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return sum(
            value
            for (name, labels), value in samples.items()
            if name == "wsched_tasks_total" and ("event", event) in labels
        )


@dataclass(kw_only=True)
class ExecutionLog:
    """Every execution a test worker started: (task id, lease token)."""

    runs: list[tuple[str, str]] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)

    def tokens_by_task(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for task_id, token in self.runs:
            out.setdefault(task_id, []).append(token)
        return out


async def run_worker(
    *,
    addresses: Sequence[str],
    pipeline_id: str,
    token: str,
    name: str,
    log: ExecutionLog,
    stop: asyncio.Event,
    work_s: float = 0.005,
) -> None:
    """Poll, 'execute' (sleep), report until ``stop``; keep results until acknowledged."""
    client = SchedulerClient(addresses=addresses, pipeline_id=pipeline_id, token=token, worker=name)
    try:
        while not stop.is_set():
            reply = await client.poll(max_tasks=20, wait_ms=1000)
            if not reply.tasks:
                continue
            for task in reply.tasks:
                log.runs.append((task.task_id, task.lease_token))
            await asyncio.sleep(work_s * random.random())
            results = [
                worker_pb2.TaskResult(
                    lease_token=t.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED, result=t.data
                )
                for t in reply.tasks
            ]
            answer = await client.report(results)
            for task, ack in zip(reply.tasks, answer.acks, strict=True):
                if ack.ack == worker_pb2.ACK_ACCEPTED:
                    log.acked[task.task_id] = task.lease_token
    finally:
        await client.close()


OPERATOR_KEY = "test-operator-key"


@dataclass(kw_only=True)
class ApiProcess:
    """``wsched api`` as a process, and the calls a tenant makes through it."""

    kafka_bootstrap: str
    database_url: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    service: Service | None = None
    api_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            "WSCHED_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "WSCHED_DATABASE_URL": self.database_url,
            "WSCHED_HTTP_PORT": str(self.port),
            "WSCHED_OPERATOR_KEY": OPERATOR_KEY,
            "WSCHED_RECONCILE_INTERVAL_S": "1",
        }
        self.service = Service(
            name="api",
            argv=[sys.executable, "-m", "services.cli", "api"],
            log_path=self.log_dir / "api.log",
            env=env,
        )
        self.service.start()
        self.service.wait_ready(lambda: port_open(self.port), timeout_s=60)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def tenant_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    async def create_pipeline(self, http: httpx.AsyncClient, *, name: str) -> ReadyPipeline:
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        tenant = await http.post("/api/tenants", json={"name": f"t-{name}"}, headers=operator)
        tenant.raise_for_status()
        http.headers["Authorization"] = f"Bearer {tenant.json()['api_key']}"
        (await http.post("/api/applications", json={"name": "app"})).raise_for_status()
        created = await http.post(
            "/api/applications/app/pipelines",
            json={"name": name, "chart": "charts/examples/echo", "lease_timeout_s": 5},
        )
        created.raise_for_status()
        async with asyncio.timeout(60):
            while True:
                view = await http.get(f"/api/applications/app/pipelines/{name}")
                if view.json()["state"] == "ready":
                    break
                await asyncio.sleep(0.3)
        body = created.json()
        return ReadyPipeline(
            id=body["id"],
            token=body["worker_token"],
            topic=body["topic"],
            partitions=body["partitions"],
            name=name,
        )

    async def submit_waves(
        self, http: httpx.AsyncClient, pipeline: ReadyPipeline, waves: range, size: int = 50
    ) -> set[str]:
        submitted: set[str] = set()
        url = f"/api/applications/app/pipelines/{pipeline.name}/tasks"
        for wave in waves:
            ids = [f"{wave}-{i}" for i in range(size)]
            items = [{"id": tid, "data": {"wave": wave, "i": i}} for i, tid in enumerate(ids)]
            answer = await http.post(url, json={"tasks": items})
            assert answer.status_code == 202, answer.text
            submitted |= set(ids)
            await asyncio.sleep(0.3)
        return submitted
