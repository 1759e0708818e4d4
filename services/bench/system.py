"""The system under test of the benchmarks and the processes of their workload.

Kafka and TiDB from the cache (``start_components``), the API and one scheduler replica
as processes on a fresh database (``start_system``), a tenant with an application and a
pipeline per phase (``Tenant``), and the workload's own processes: the submitting client,
the bench workers (``submit_client``, ``worker_processes``). ``wsched bench`` (``run``)
and the other benchmarks (``triggers``, ``waiters``, ``fairness``) measure on top of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from services.infra import kafka, tidb
from services.infra.cache import Cache
from services.infra.process import Service, free_port, port_open
from services.placement import Route, TopicMode
from services.store import migrate
from services.store.engine import make_engine

Report = dict[str, Any]
Say = Callable[[str], None]
OPERATOR_KEY = f"bench-{uuid.uuid4().hex}"


class BenchFailed(Exception):
    """A phase did not complete; the message says which and what the logs show."""


@dataclass(frozen=True, kw_only=True)
class Options:
    tasks: int = 100_000
    workers: int = 2
    backlog: int = 1_000_000
    batch: int = 1000
    #: Batches the client keeps in flight.
    concurrency: int = 4
    #: Leases the holder keeps for the memory figure, after ``warmup`` tasks ran through.
    hold: int = 20_000
    warmup: int = 5_000
    #: How long the paced phase offers load, at most ``tasks`` tasks.
    paced_s: float = 30.0
    #: How long each open-loop submit latency run offers its load.
    latency_s: float = 20.0
    quick: bool = False

    @classmethod
    def build(cls, *, tasks: int | None, workers: int, backlog: int | None, quick: bool) -> Options:
        """``--quick`` shrinks every phase to a smoke run; explicit sizes still win."""
        base = cls(
            tasks=2000, backlog=5000, hold=5000, warmup=1000, paced_s=5, latency_s=3, quick=True
        )
        base = base if quick else cls()
        return replace(
            base,
            tasks=tasks if tasks is not None else base.tasks,
            backlog=backlog if backlog is not None else base.backlog,
            workers=workers,
        )


# -- components and the system under test ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Components:
    bootstrap: str
    #: ``mysql+pymysql://root@host:port/``: databases are created under it.
    tidb_root_url: str
    #: Process ids by name, for CPU accounting; empty when the caller runs the components.
    pids: dict[str, int] = field(default_factory=dict)
    #: TiDB's status metrics (``http://host:port/metrics``), for its writes per task.
    tidb_metrics: str = ""


@contextlib.contextmanager
def start_components(cache: Cache, work: Path, say: Say) -> Iterator[Components]:
    """Kafka and TiDB from the cache, on fresh data directories under ``work``."""
    say("starting Kafka and TiDB from the cache")
    broker = kafka.KafkaBroker(libs=kafka.provision(cache), data_dir=work / "kafka")
    server = tidb.TidbServer(binary=tidb.provision(cache), data_dir=work / "tidb")
    with contextlib.ExitStack() as stack:
        broker.start()
        stack.callback(broker.stop)
        # tidb-server writes its slow-query log to its working directory: keep it in ``work``.
        with contextlib.chdir(work):
            server.start()
        stack.callback(server.stop)
        yield Components(
            bootstrap=broker.bootstrap,
            tidb_root_url=server.url(),
            pids={"kafka": broker.pid or 0, "tidb": server.pid or 0},
            tidb_metrics=f"http://127.0.0.1:{server.status_port}/metrics",
        )


@dataclass(frozen=True, kw_only=True)
class System:
    api: str
    grpc: str
    metrics: str
    database_url: str
    scheduler_pid: int
    #: Process ids by name (the components', the API's, the scheduler's) for CPU accounting.
    pids: dict[str, int]
    #: TiDB's status metrics, or "" when unknown.
    tidb_metrics: str = ""
    #: The settings the API and the scheduler were started with, and the run's directory
    #: (for another replica beside them).
    env: Mapping[str, str] = field(default_factory=dict)
    work: Path | None = None
    #: Set by a run whose phase fell short without failing: its logs are kept too.
    shortfalls: list[str] = field(default_factory=list)


@contextlib.contextmanager
def start_system(
    components: Components, work: Path, say: Say, env: dict[str, str] | None = None
) -> Iterator[System]:
    """The API and one scheduler replica as processes, on a fresh database; ``env``: more
    settings for both."""
    database = f"wsched_bench_{uuid.uuid4().hex[:8]}"
    database_url = f"{components.tidb_root_url.rstrip('/')}/{database}"
    admin = make_engine(components.tidb_root_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{database}`"))
    admin.dispose()
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    engine.dispose()
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "WSCHED_KAFKA_BOOTSTRAP": components.bootstrap,
        "WSCHED_DATABASE_URL": database_url,
        "WSCHED_OPERATOR_KEY": OPERATOR_KEY,
        "WSCHED_HTTP_PORT": str(http_port),
        "WSCHED_GRPC_PORT": str(grpc_port),
        "WSCHED_METRICS_PORT": str(metrics_port),
        "WSCHED_PLACEMENT_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "WSCHED_REPLICA_NAME": f"bench-{grpc_port}",
        "WSCHED_RECONCILE_INTERVAL_S": "1",
        **(env or {}),
    }
    say("starting the API and the scheduler")
    api, scheduler = (
        Service(
            name=name,
            argv=[sys.executable, "-m", "services.cli", name],
            log_path=work / f"{name}.log",
            env=env,
        )
        for name in ("api", "scheduler")
    )
    with contextlib.ExitStack() as stack:
        for service in (api, scheduler):
            service.start()
            stack.callback(service.stop)
        api.wait_ready(lambda: port_open(http_port), timeout_s=60)
        scheduler.wait_ready(lambda: port_open(grpc_port), timeout_s=60)
        scheduler.wait_ready(lambda: port_open(metrics_port), timeout_s=60)
        yield System(
            api=f"http://127.0.0.1:{http_port}",
            grpc=f"127.0.0.1:{grpc_port}",
            metrics=f"http://127.0.0.1:{metrics_port}/metrics",
            database_url=database_url,
            scheduler_pid=scheduler.pid or 0,
            pids={**components.pids, "api": api.pid or 0, "scheduler": scheduler.pid or 0},
            tidb_metrics=components.tidb_metrics,
            env=env,
            work=work,
        )


@contextlib.contextmanager
def bench_system(
    name: str,
    *,
    cache: Cache,
    say: Say,
    components: Components | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[System]:
    """The system under test of ``wsched bench-<name>``, and the components unless given,
    on a fresh work directory: removed after a run that ends well, kept and named after
    one that fails (the processes' logs are in it)."""
    for chatty in ("httpx", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix=f"wsched-bench-{name}-"))
    try:
        with contextlib.ExitStack() as stack:
            if components is None:
                components = stack.enter_context(start_components(cache, work, say))
            system = stack.enter_context(start_system(components, work, say, env))
            yield system
    except BaseException:
        say(f"stopped; the logs are kept in {work}")
        raise
    if system.shortfalls:
        say(f"{'; '.join(system.shortfalls)}: the logs are kept in {work}")
        return
    shutil.rmtree(work, ignore_errors=True)


# -- the tenant's side ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    id: str
    token: str
    path: str
    #: Where its records go (the API's default unless the bench asked for one).
    topic_mode: TopicMode = TopicMode.DEDICATED

    @property
    def route(self) -> Route:
        return Route(self.id, self.topic_mode)


class Tenant:
    """A tenant with one application, creating a pipeline per phase over the HTTP API."""

    def __init__(self, *, api: str) -> None:
        self.http = httpx.Client(base_url=api, timeout=60)
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        created = self.http.post(
            "/api/tenants",
            json={"name": self.name},
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        )
        created.raise_for_status()
        # The quotas are not what is measured: a 1,000,000-task backlog passes the default
        # submit rate and, with the earlier phases' tasks, could near the backlog quota.
        self.http.patch(
            f"/api/tenants/{self.name}",
            json={"quotas": {"submit_rate": 0, "max_backlog": 0}},
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        ).raise_for_status()
        self.key: str = created.json()["api_key"]
        self.http.headers["Authorization"] = f"Bearer {self.key}"
        self.http.post("/api/applications", json={"name": "bench"}).raise_for_status()

    def pipeline(
        self, name: str, *, lease_timeout_s: int, values: dict[str, Any] | None = None
    ) -> Pipeline:
        body: dict[str, Any] = {
            "name": name,
            "chart": "charts/examples/echo",
            "lease_timeout_s": lease_timeout_s,
        }
        if values is not None:
            body["values"] = values
        created = self.http.post("/api/applications/bench/pipelines", json=body)
        created.raise_for_status()
        path = f"/api/applications/bench/pipelines/{name}"
        until(lambda: self.http.get(path).json()["state"] == "ready", 60, f"{name} ready")
        body = created.json()
        return Pipeline(
            id=body["id"],
            token=body["worker_token"],
            path=path,
            topic_mode=TopicMode(body["topic_mode"]),
        )

    def stats(self, pipeline: Pipeline) -> dict[str, Any]:
        answer = self.http.get(f"{pipeline.path}/stats")
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    def succeeded(self, pipeline: Pipeline) -> int:
        return int(self.stats(pipeline)["counts"].get("succeeded", 0))


def until(check: Callable[[], bool], timeout_s: float, what: str, pause_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(pause_s)


# -- processes of the workload --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Run:
    """Where the benchmark's processes find the system, and where their files go."""

    system: System
    tenant: Tenant
    options: Options
    work: Path
    say: Say


def module_service(label: str, module: str, work: Path, **flags: object) -> Service:
    """``python -m module --flag value ...`` as a service logging to ``work/label.log``."""
    argv = [sys.executable, "-m", module]
    for flag, value in flags.items():
        argv += [f"--{flag.replace('_', '-')}", str(value)]
    return Service(name=label, argv=argv, log_path=work / f"{label}.log")


def submit_client(
    run: Run,
    pipeline: Pipeline,
    count: int,
    *,
    rate: float = 0.0,
    due: tuple[float, float] = (0, 0),
) -> dict[str, Any]:
    """Run the submitting client to completion; its summary. ``due``: (first, last) due
    time (unix) of delayed tasks, spread in submit order; (0, 0): due at once."""
    out = run.work / f"client-{uuid.uuid4().hex[:6]}.json"
    opts = run.options
    client = module_service(
        out.stem,
        "services.bench.client",
        run.work,
        api=run.system.api,
        key=run.tenant.key,
        pipeline_path=pipeline.path,
        tasks=count,
        batch=opts.batch,
        concurrency=opts.concurrency,
        rate=rate,
        due_from=due[0],
        due_to=due[1],
        out=out,
    )
    return summary_of(client, out, "the client")


def summary_of(client: Service, out: Path, what: str) -> dict[str, Any]:
    """Run a client process to its end; the JSON summary it wrote to ``out``."""
    client.start()
    try:
        until(lambda: not client.running(), 3600, what, pause_s=0.1)
    finally:
        client.stop()
    if not out.exists():
        raise BenchFailed(f"{what} failed:\n{client.log_tail()}")
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


@contextlib.contextmanager
def worker_processes(run: Run, pipeline: Pipeline, count: int, *, hold: int = 0) -> Iterator[None]:
    """``count`` worker processes on ``pipeline``, stopped (SIGTERM) on the way out."""
    with contextlib.ExitStack() as stack:
        for index in range(count):
            name = f"worker-{pipeline.path.rsplit('/', 1)[1]}-{index}"
            worker = module_service(
                name,
                "services.bench.worker",
                run.work,
                target=run.system.grpc,
                pipeline_id=pipeline.id,
                token=pipeline.token,
                name=name,
                hold=hold,
                out=run.work / f"{name}.json",
            )
            worker.start()
            stack.callback(worker.stop, grace_s=60)
        yield
