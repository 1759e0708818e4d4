"""``wsched bench``: the stated workload, end to end, on this machine.

The workload: no-op tasks with 100-byte data, submitted in batches of 1,000 by a client
process separate from the API and the scheduler, polled and reported in batches by worker
processes; Kafka and TiDB run on the same machine, started from the cache on fresh data
directories; every phase starts on a pipeline of its own, so its backlog starts empty.

Phases, in order, and what each one reports:

1. **floor** (``floor``): Kafka and TiDB alone, before anything else runs.
2. **memory**: ``memory_per_inflight_task_bytes``, on the scheduler fresh from its start
   (see :func:`_memory_phase` for the method).
3. **throughput**: ``e2e_tasks_per_s`` is tasks / (last ``finished_at`` in the store -
   the client's first submit), once ``/stats`` counts them all succeeded; the submit
   percentiles are over the client's per-batch request times; ``scheduler_rss_mb`` is the
   scheduler's peak RSS (``/proc``, sampled every 100 ms) during this phase and the next.
4. **paced**: the client offers half the measured end-to-end rate; ``dispatch_p99_ms``
   comes from the difference of the scheduler's ``wsched_dispatch_seconds`` histogram
   across the phase (interpolated inside a bucket, as PromQL's ``histogram_quantile``).
5. **backlog**: the backlog tasks submitted with no worker running; ``backlog_rss_mb`` is
   the scheduler's RSS once the grain reports them all admitted and queued.

Every process started here is stopped on the way out, on error and on Ctrl-C (SIGTERM
is turned into the same interrupt).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import sqlalchemy as sa

from services.bench import floor
from services.bench.measure import (
    CpuUse,
    PeakRss,
    dispatch_buckets,
    histogram_quantile,
    last_finished_unix,
    percentile,
    pipeline_gauge,
    scrape,
    settled_rss_mb,
    tidb_writes,
    writes_per_task,
)
from services.bench.report import FIGURES, machine, versions
from services.infra import kafka, tidb
from services.infra.cache import Cache
from services.infra.process import Service, free_port, port_open
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


@contextlib.contextmanager
def start_system(components: Components, work: Path, say: Say) -> Iterator[System]:
    """The API and one scheduler replica as processes, on a fresh database."""
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
        )


@contextlib.contextmanager
def bench_system(
    name: str, *, cache: Cache, say: Say, components: Components | None = None
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
            yield stack.enter_context(start_system(components, work, say))
    except BaseException:
        say(f"stopped; the logs are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)


# -- the tenant's side ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    id: str
    token: str
    path: str


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
        self.key: str = created.json()["api_key"]
        self.http.headers["Authorization"] = f"Bearer {self.key}"
        self.http.post("/api/applications", json={"name": "bench"}).raise_for_status()

    def pipeline(self, name: str, *, lease_timeout_s: int) -> Pipeline:
        body = {"name": name, "chart": "charts/examples/echo", "lease_timeout_s": lease_timeout_s}
        created = self.http.post("/api/applications/bench/pipelines", json=body)
        created.raise_for_status()
        path = f"/api/applications/bench/pipelines/{name}"
        _until(lambda: self.http.get(path).json()["state"] == "ready", 60, f"{name} ready")
        return Pipeline(id=created.json()["id"], token=created.json()["worker_token"], path=path)

    def stats(self, pipeline: Pipeline) -> dict[str, Any]:
        answer = self.http.get(f"{pipeline.path}/stats")
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    def succeeded(self, pipeline: Pipeline) -> int:
        return int(self.stats(pipeline)["counts"].get("succeeded", 0))


def _until(check: Callable[[], bool], timeout_s: float, what: str, pause_s: float = 0.2) -> None:
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


def _module(label: str, module: str, work: Path, **flags: object) -> Service:
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
    client = _module(
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
    return _summary_of(client, out, "the client")


def _summary_of(client: Service, out: Path, what: str) -> dict[str, Any]:
    """Run a client process to its end; the JSON summary it wrote to ``out``."""
    client.start()
    try:
        _until(lambda: not client.running(), 3600, what, pause_s=0.1)
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
            worker = _module(
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


# -- measuring the scheduler -----------------------------------------------------------------


def _succeeded(run: Run, pipeline: Pipeline, count: int, what: str) -> None:
    timeout = 600 + count / 50
    _until(lambda: run.tenant.succeeded(pipeline) >= count, timeout, what, pause_s=0.5)


def _admitted(run: Run, pipeline: Pipeline) -> float:
    key = ("wsched_tasks_total", (("event", "admitted"), ("pipeline", pipeline.id)))
    return scrape(run.system.metrics).get(key, 0.0)


def _memory_phase(run: Run) -> Report:
    """Scheduler memory per in-flight task: leased to a worker, not yet reported.

    Method: on a pipeline of its own, ``warmup`` tasks first run through a worker, so that
    the scheduler's code paths, connection pools and Kafka buffers are allocated before the
    first reading. RSS is then read idle (the median of five readings over a second).
    ``hold`` tasks are submitted with no worker running and admitted; then a holder worker
    polls until it holds every one of them as a lease and reports nothing. Once the grants
    have been flushed (so no pending change is counted), RSS is read again. The figure is
    (held - idle) / ``hold``: the task with its 100-byte data, its lease, and whatever else
    the grain keeps per in-flight task. It is an upper bound: transient allocations of the
    admission between the two readings that the allocator does not give back are charged
    to the leases too.
    """
    opts, pid = run.options, run.system.scheduler_pid
    pipeline = run.tenant.pipeline("memory", lease_timeout_s=3600)
    run.say(f"memory: {opts.warmup:,} warm-up tasks, then {opts.hold:,} held as leases")
    with worker_processes(run, pipeline, 1):
        submit_client(run, pipeline, opts.warmup)
        _succeeded(run, pipeline, opts.warmup, "the warm-up tasks")
    time.sleep(3)  # past the grain's periodic flush: nothing pending at the idle reading
    idle = settled_rss_mb(pid)
    submit_client(run, pipeline, opts.hold)
    total = opts.warmup + opts.hold
    _until(lambda: _admitted(run, pipeline) >= total, 600, "the held tasks admitted")
    with worker_processes(run, pipeline, 1, hold=opts.hold):

        def all_leased() -> bool:
            leased = pipeline_gauge(run.system.metrics, "wsched_pipeline_leased", pipeline.id)
            return leased >= opts.hold

        _until(all_leased, 600, f"{opts.hold} leases held")
        time.sleep(3)  # the grants are flushed every 2 s
        held = settled_rss_mb(pid)
    _succeeded(run, pipeline, total, "the held tasks reported")
    per_task = (held - idle) * 1024 * 1024 / opts.hold
    return {
        "memory_per_inflight_task_bytes": round(per_task),
        "details": {"memory": {"idle_rss_mb": round(idle, 1), "held_rss_mb": round(held, 1)}},
    }


def _throughput_phase(run: Run) -> Report:
    opts = run.options
    pipeline = run.tenant.pipeline("throughput", lease_timeout_s=60)
    run.say(f"throughput: {opts.tasks:,} tasks, {opts.workers} worker process(es)")
    written = _tidb_writes(run)
    with CpuUse(run.system.pids) as cpu, worker_processes(run, pipeline, opts.workers):
        summary = submit_client(run, pipeline, opts.tasks)
        _succeeded(run, pipeline, opts.tasks, "every task succeeded")
    writes = _writes_since(run, written, opts.tasks)
    count, last = last_finished_unix(run.system.database_url, pipeline.id)
    elapsed = last - summary["first_submit_unix"]
    latencies = summary["latencies_ms"]
    submit_s = summary["last_ack_unix"] - summary["first_submit_unix"]
    return {
        "e2e_tasks_per_s": round(count / elapsed, 1),
        "submit_p50_ms": round(percentile(latencies, 0.50), 1),
        "submit_p99_ms": round(percentile(latencies, 0.99), 1),
        "details": {
            "throughput": {
                "tasks_succeeded": count,
                "e2e_s": round(elapsed, 2),
                "submit_s": round(submit_s, 2),
                "submit_tasks_per_s": round(opts.tasks / submit_s, 1),
                "submit_retries": summary["retries"],
                "cpu_s": cpu.seconds,
                # The client outruns the workers: most tasks wait behind a backlog.
                "tidb_writes": writes,
            }
        },
    }


def _tidb_writes(run: Run) -> dict[str, float] | None:
    return tidb_writes(run.system.tidb_metrics) if run.system.tidb_metrics else None


def _writes_since(run: Run, before: dict[str, float] | None, tasks: int) -> dict[str, float]:
    after = _tidb_writes(run)
    return writes_per_task(before, after, tasks) if before and after else {}


def _paced_phase(run: Run, rate: float) -> Report:
    opts = run.options
    batches = max(2, round(rate * opts.paced_s / opts.batch))
    count = min(opts.tasks, batches * opts.batch)
    pipeline = run.tenant.pipeline("paced", lease_timeout_s=60)
    run.say(f"paced: {count:,} tasks offered at {rate:,.0f} tasks/s (half the peak)")
    with worker_processes(run, pipeline, opts.workers):
        time.sleep(2)  # the workers are waiting in a poll before the first task is ready
        before = dispatch_buckets(run.system.metrics)
        written = _tidb_writes(run)
        submit_client(run, pipeline, count, rate=rate)
        _succeeded(run, pipeline, count, "every paced task succeeded")
        after = dispatch_buckets(run.system.metrics)
        writes = _writes_since(run, written, count)
    return {
        "dispatch_p99_ms": round(histogram_quantile(0.99, before, after) * 1000, 2),
        "details": {
            "paced": {
                "offered_tasks_per_s": round(rate, 1),
                "tasks": count,
                "dispatch_p50_ms": round(histogram_quantile(0.50, before, after) * 1000, 2),
                # Half the peak rate: tasks hardly wait, the backlog stays near empty.
                "tidb_writes": writes,
            }
        },
    }


#: The open-loop submit runs the cost-per-task issue names: (mode, requests/s, tasks each).
LATENCY_RUNS = (("single", 1000.0, 1), ("batch", 5.0, 1000))


def _latency_phase(run: Run) -> Report:
    """Submit latency on an open loop (``services/bench/latency.py``): single submits at
    1,000 a second, then batches of 1,000 at 5 a second, each on a pipeline of its own
    with no workers, so the scheduler admits what the API accepts but runs nothing."""
    report: Report = {"details": {}}
    for mode, rate, size in LATENCY_RUNS:
        pipeline = run.tenant.pipeline(f"latency-{mode}", lease_timeout_s=60)
        run.say(f"submit latency: {mode} requests of {size:,} at {rate:,.0f}/s, open loop")
        out = run.work / f"latency-{mode}.json"
        client = _module(
            out.stem,
            "services.bench.latency",
            run.work,
            api=run.system.api,
            key=run.tenant.key,
            pipeline_path=pipeline.path,
            mode=mode,
            rate=rate,
            seconds=run.options.latency_s,
            batch=size,
            out=out,
        )
        summary = _summary_of(client, out, f"the {mode} latency client")
        latencies, lag = summary["latencies_ms"], summary["client_lag_ms"]
        report[f"{mode}_submit_p99_ms"] = round(percentile(latencies, 0.99), 1)
        report["details"][f"{mode}_submit"] = {
            "requests": summary["requests"],
            "tasks_accepted": summary["tasks"],
            "offered_per_s": summary["offered_per_s"],
            "answered_per_s": summary["answered_per_s"],
            "refused": summary["refused"],
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p90_ms": round(percentile(latencies, 0.90), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1),
            "client_lag_p99_ms": round(percentile(lag, 0.99), 1),
        }
    return report


def _backlog_phase(run: Run) -> Report:
    opts, pid = run.options, run.system.scheduler_pid
    pipeline = run.tenant.pipeline("backlog", lease_timeout_s=60)
    run.say(f"backlog: {opts.backlog:,} tasks submitted with no worker running")

    def backlog() -> float:
        return pipeline_gauge(run.system.metrics, "wsched_pipeline_backlog", pipeline.id)

    with PeakRss(pid) as peak:
        summary = submit_client(run, pipeline, opts.backlog)
        _until(lambda: backlog() >= opts.backlog, 600 + opts.backlog / 100, "the backlog admitted")
        admitted_s = time.time() - summary["first_submit_unix"]
    time.sleep(3)
    rss = settled_rss_mb(pid)
    # /stats reads the counters the grain flushes; give it a few flushes to catch up.
    with contextlib.suppress(BenchFailed):
        _until(lambda: run.tenant.stats(pipeline)["backlog"] >= opts.backlog, 15, "/stats")
    return {
        "backlog_rss_mb": round(rss, 1),
        "details": {
            "backlog": {
                "tasks": opts.backlog,
                "admitted_tasks_per_s": round(opts.backlog / admitted_s, 1),
                "peak_rss_mb": round(peak.peak_mb, 1),
                "stats_backlog": run.tenant.stats(pipeline)["backlog"],
                "grain_backlog": backlog(),
            }
        },
    }


def _floor(components: Components, options: Options, work: Path, say: Say) -> Report:
    say(f"floor: {options.tasks:,} tasks through Kafka alone")
    kafka_rate = floor.kafka_floor(
        bootstrap=components.bootstrap, count=options.tasks, batch=options.batch, work_dir=work
    )
    say(f"floor: {options.tasks:,} tasks' rows through TiDB alone")
    tidb_rate = floor.tidb_floor(
        root_url=components.tidb_root_url, count=options.tasks, batch=options.batch
    )
    return {
        "floor_kafka_tasks_per_s": round(kafka_rate, 1),
        "floor_tidb_tasks_per_s": round(tidb_rate, 1),
        "floor_tasks_per_s": round(min(kafka_rate, tidb_rate), 1),
    }


# -- the whole run ----------------------------------------------------------------------------


def _merge(report: Report, part: Report) -> None:
    details = part.pop("details", {})
    report.update(part)
    report.setdefault("details", {}).update(details)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every child process is stopped."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _phases(bench: Run, report: Report) -> None:
    _merge(report, _memory_phase(bench))
    with PeakRss(bench.system.scheduler_pid) as peak:
        _merge(report, _throughput_phase(bench))
        _merge(report, _paced_phase(bench, report["e2e_tasks_per_s"] / 2))
    report["scheduler_rss_mb"] = round(peak.peak_mb, 1)
    _merge(report, _latency_phase(bench))
    report["backlog_rss_mb"] = None
    if bench.options.backlog:
        _merge(report, _backlog_phase(bench))


def run(
    options: Options, *, cache: Cache, say: Say, components: Components | None = None
) -> Report:
    """Every phase, in order; ``components`` given means: use them, start none."""
    started = time.monotonic()
    for chatty in ("httpx", "alembic"):  # a line per request or migration drowns the progress
        logging.getLogger(chatty).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="wsched-bench-"))
    try:
        with _sigterm_interrupts():
            report = _run(options, cache=cache, say=say, components=components, work=work)
    except BaseException:
        say(f"stopped; the logs are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    report["fraction_of_floor"] = round(report["e2e_tasks_per_s"] / report["floor_tasks_per_s"], 3)
    report["duration_s"] = round(time.monotonic() - started)
    figures = {key: report.pop(key) for key, _ in FIGURES}
    return {**figures, **report}


def _run(
    options: Options, *, cache: Cache, say: Say, components: Components | None, work: Path
) -> Report:
    report: Report = {}
    with contextlib.ExitStack() as stack:
        if components is None:
            components = stack.enter_context(start_components(cache, work, say))
        report["machine"], report["versions"] = machine(), versions(components.tidb_root_url)
        report["workload"] = {k: v for k, v in vars(options).items() if k != "quick"}
        _merge(report, _floor(components, options, work, say))
        system = stack.enter_context(start_system(components, work, say))
        tenant = Tenant(api=system.api)
        stack.callback(tenant.http.close)
        _phases(Run(system=system, tenant=tenant, options=options, work=work, say=say), report)
    return report
