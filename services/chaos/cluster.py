"""The soak's processes: Kafka and TiDB on data directories that survive a ``kill -9``,
three scheduler replicas, two API processes and the bench workers.

Each process keeps its ports across restarts, so a restarted replica comes back under
its stable name and address (static group membership takes its shards back) and a
restarted broker or ``tidb-server`` is found where the others left it.
"""

from __future__ import annotations

import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from services.infra import kafka, tidb
from services.infra.cache import Cache
from services.infra.process import Service, free_port, port_open
from services.store import migrate
from services.store.engine import make_engine

OPERATOR_KEY = f"chaos-{uuid.uuid4().hex}"
DATABASE = "wsched_chaos"


@dataclass(kw_only=True)
class Node:
    """One product process (replica or API) on fixed ports, restartable after a kill."""

    name: str
    command: str
    env: dict[str, str]
    port: int
    log_dir: Path
    service: Service | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.service = Service(
            name=self.name,
            argv=[sys.executable, "-m", "services.cli", self.command],
            log_path=self.log_dir / f"{self.name}.log",
            env=self.env,
        )
        self.service.start()
        self.service.wait_ready(lambda: port_open(self.port), timeout_s=120)

    def kill(self) -> None:
        """``kill -9``, then reap it so that ``start`` can run it again."""
        if self.service is not None:
            self.service.signal(signal.SIGKILL)
            self.service.stop(grace_s=10)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace_s=20)

    def running(self) -> bool:
        return self.service is not None and self.service.running()


@dataclass(kw_only=True)
class Cluster:
    """Every process of the soak, started by :meth:`start`, stopped by :meth:`stop`."""

    cache: Cache
    work: Path
    replicas: int = 3
    apis: int = 2
    broker: kafka.KafkaBroker = field(init=False)
    tidb: tidb.TidbServer = field(init=False)
    scheduler_nodes: list[Node] = field(default_factory=list, init=False)
    api_nodes: list[Node] = field(default_factory=list, init=False)
    workers: list[Service] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.broker = kafka.KafkaBroker(
            libs=kafka.provision(self.cache), data_dir=self.work / "kafka"
        )
        self.tidb = tidb.TidbServer(binary=tidb.provision(self.cache), data_dir=self.work / "tidb")

    @property
    def database_url(self) -> str:
        return self.tidb.url(DATABASE)

    @property
    def api_urls(self) -> list[str]:
        return [f"http://{node.address}" for node in self.api_nodes]

    @property
    def grpc_targets(self) -> str:
        return ",".join(node.address for node in self.scheduler_nodes)

    def start(self) -> None:
        self.broker.start()
        self.tidb.start()
        admin = make_engine(self.tidb.url())
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`"))
        admin.dispose()
        engine = make_engine(self.database_url)
        migrate.upgrade(engine)
        engine.dispose()
        self.scheduler_nodes = [self._replica(i) for i in range(self.replicas)]
        self.api_nodes = [self._api(i) for i in range(self.apis)]
        for node in [*self.scheduler_nodes, *self.api_nodes]:
            node.start()

    def _common_env(self) -> dict[str, str]:
        return {
            "WSCHED_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "WSCHED_DATABASE_URL": self.database_url,
            "WSCHED_OPERATOR_KEY": OPERATOR_KEY,
            "WSCHED_LOG_LEVEL": "INFO",
        }

    def _replica(self, index: int) -> Node:
        port = free_port()
        env = {
            **self._common_env(),
            "WSCHED_GRPC_PORT": str(port),
            "WSCHED_METRICS_PORT": str(free_port()),
            "WSCHED_REPLICA_NAME": f"chaos-replica-{index}",
            "WSCHED_PLACEMENT_GROUP": "wsched.chaos",
        }
        name = f"replica-{index}"
        return Node(name=name, command="scheduler", env=env, port=port, log_dir=self.work)

    def _api(self, index: int) -> Node:
        port = free_port()
        env = {
            **self._common_env(),
            "WSCHED_HTTP_PORT": str(port),
            "WSCHED_RECONCILE_INTERVAL_S": "1",
        }
        return Node(name=f"api-{index}", command="api", env=env, port=port, log_dir=self.work)

    def start_worker(self, *, label: str, pipeline_id: str, token: str) -> Service:
        """A bench worker on every replica's address, logging each execution."""
        argv = [sys.executable, "-m", "services.bench.worker", "--target", self.grpc_targets]
        argv += ["--pipeline-id", pipeline_id, "--token", token, "--name", label]
        argv += ["--out", str(self.work / f"{label}.json")]
        argv += ["--execution-log", str(self.executions_dir / f"{label}.log")]
        worker = Service(name=label, argv=argv, log_path=self.work / f"{label}.out")
        worker.start()
        self.workers.append(worker)
        return worker

    @property
    def executions_dir(self) -> Path:
        path = self.work / "executions"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def kill_broker(self) -> None:
        self.broker.signal(signal.SIGKILL)
        self.broker.stop()

    def kill_tidb(self) -> None:
        self.tidb.signal(signal.SIGKILL)
        self.tidb.stop()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(grace_s=30)
        for node in [*self.api_nodes, *self.scheduler_nodes]:
            node.stop()
        self.tidb.stop()
        self.broker.stop()
