"""``wsched bench-idle``: what pipelines cost a scheduler replica when they have no work.

A fresh system (Kafka, TiDB, the API and one scheduler replica, the no-op deployer) is
measured idle with no pipelines, then ``pipelines`` empty pipelines are created over the
API and, once the replica hosts every one (``wsched_hosted_pipelines``) and their grains
have deactivated (``wsched_active_grains`` 0, after ``idle_timeout_s``), measured idle
again: each process's CPU over ``measure_s`` in % of one core, and the replica's and the
broker's RSS. Then one task is submitted to every pipeline and the time until all are
admitted (rows in TiDB) is taken. With ``failover``, a second replica joins (the placement
gives it about half the shards), the first is killed with SIGKILL, and the time until the
survivor hosts every pipeline and until each of them has answered a worker's poll there
is taken.

The issue's targets for 10,000 pipelines: the replica below 5 % of a core and 300 MB.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa

from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.bench import idle_timers
from services.bench.measure import CpuUse, open_files, scrape, settled_rss_mb
from services.bench.report import machine
from services.bench.system import (
    BenchFailed,
    Components,
    Say,
    System,
    Tenant,
    bench_system,
    until,
)
from services.infra.cache import Cache
from services.infra.process import Service, free_port, port_open
from services.store.engine import make_engine
from services.store.schema import pipelines as pipelines_table
from services.store.schema import tasks as tasks_table

Report = dict[str, Any]
#: The issue's targets; a run that misses one keeps its processes' logs.
TAKEOVER_TARGET_S = 60.0
LATE_TARGET_MS = 1000.0


@dataclass(frozen=True, kw_only=True)
class Options:
    pipelines: int = 200
    #: How long each idle measurement lasts.
    measure_s: float = 30.0
    #: Pipelines created at once over the API.
    concurrency: int = 8
    #: The replica's ``WSCHED_GRAIN_IDLE_TIMEOUT_S`` (0: grains never deactivate).
    idle_timeout_s: float = 10.0
    #: The pipelines' ``topic``: "shared" (a partition of the shared topic each) or
    #: "dedicated" (a topic of their own, 2 partitions each).
    topic: str = "shared"
    #: Kill the replica (SIGKILL) once a second one has joined, and time the takeover.
    failover: bool = False
    #: Then give each pipeline one task due a few minutes ahead, all at one moment: idle
    #: with grains resting on their wake-ups, and how late each is handed out.
    timers: bool = False
    #: The replica's ``WSCHED_GRAIN_WAKE_MARGIN_S``: a grain rests only if its task is due
    #: later than its idle timeout plus this.
    wake_margin_s: float = 60.0


def run(
    options: Options, *, cache: Cache, say: Say, components: Components | None = None
) -> Report:
    report: Report = {"machine": machine(), "workload": vars(options).copy()}
    env = {
        "WSCHED_QUOTA_MAX_PIPELINES": "0",
        "WSCHED_GRAIN_IDLE_TIMEOUT_S": str(options.idle_timeout_s),
        "WSCHED_GRAIN_WAKE_MARGIN_S": str(options.wake_margin_s),
    }
    with bench_system("idle", cache=cache, say=say, components=components, env=env) as system:
        engine = make_engine(system.database_url)
        tenant = Tenant(api=system.api)
        try:
            say(f"measuring the idle system with no pipelines for {options.measure_s:g}s")
            report["no_pipelines"] = _idle(system, options.measure_s)
            started = time.monotonic()
            tokens = _create(tenant, options, say)
            ids = list(tokens)
            until(lambda: _ready(engine) >= len(ids), 600 + len(ids) / 5, "pipelines ready")
            report["create_s"] = round(time.monotonic() - started, 1)
            say(f"{len(ids)} pipelines ready; waiting for the replica to host them")
            until(lambda: _gauge(system, "wsched_hosted_pipelines") >= len(ids), 600, "hosting")
            report["host_s"] = round(time.monotonic() - started, 1)
            if options.idle_timeout_s > 0:
                say("waiting for the idle grains to deactivate")
                limit = options.idle_timeout_s + 120
                until(lambda: _gauge(system, "wsched_active_grains") == 0, limit, "deactivation")
                report["deactivated_s"] = round(time.monotonic() - started, 1)
            time.sleep(5)  # activation's or deactivation's own work done
            say(f"measuring {len(ids)} idle pipelines for {options.measure_s:g}s")
            before = _statements(engine)
            report["with_pipelines"] = _idle(system, options.measure_s)
            report["with_pipelines"]["active_grains"] = _gauge(system, "wsched_active_grains")
            report["with_pipelines"]["tidb_statements_per_s"] = _busiest(
                before, _statements(engine), options.measure_s
            )
            if options.timers:
                report["with_timers"] = _with_timers(system, tenant, tokens, options, say)
            with contextlib.ExitStack() as survivors:
                if options.failover:
                    # The survivor stays up for the tasks that follow.
                    report["failover"] = _failover(system, tokens, say, survivors)
                    if (
                        report["failover"].get("all_polled_s", TAKEOVER_TARGET_S)
                        >= TAKEOVER_TARGET_S
                    ):
                        system.shortfalls.append("the takeover missed its target")
                report["one_task_each"] = _one_task_each(tenant, engine, ids, options, say)
                if "all_admitted_s" not in report["one_task_each"]:
                    system.shortfalls.append("not every pipeline's task was admitted")
        finally:
            tenant.http.close()
            engine.dispose()
    return report


def _with_timers(
    system: System, tenant: Tenant, tokens: dict[str, str], options: Options, say: Say
) -> Report:
    """``idle_timers.py``: rest with a task due later each, then the herd at its due time."""
    count = len(tokens)
    # Room for the submits (about 100 a second), the grains' rest (only for a task due
    # later than the idle timeout plus the wake margin) and the measurement.
    ahead = options.idle_timeout_s + options.wake_margin_s + options.measure_s + 60
    due_at = time.time() + count / 50 + ahead
    report: Report = {
        "submit_s": round(
            idle_timers.submit_due_at(
                tenant, count, due_at, concurrency=options.concurrency, say=say
            ),
            1,
        )
    }
    started = time.monotonic()
    say("waiting for the grains to rest with their wake-ups")
    # Leave the measurement and the polls' start (20 s before due) their time.
    limit_s = max(10.0, due_at - time.time() - options.measure_s - 30)
    still_active = idle_timers.wait_resting(
        lambda: _gauge(system, "wsched_active_grains"), limit_s=limit_s
    )
    report["rested_s"] = round(time.monotonic() - started, 1)
    report["still_active"] = still_active
    if still_active:
        system.shortfalls.append(f"{still_active} grains did not rest")
    time.sleep(5)
    say(f"measuring {count} pipelines holding a task due later for {options.measure_s:g}s")
    report["idle"] = _idle(system, options.measure_s)
    report["lateness"] = idle_timers.lateness(system.grpc, tokens, due_at, say)
    if report["lateness"]["handed_out"] < count:
        system.shortfalls.append("not every delayed task was handed out")
    elif report["lateness"].get("p99_ms", 0) > LATE_TARGET_MS:
        system.shortfalls.append("delayed tasks were handed out more than a second late")
    return report


def _idle(system: System, seconds: float) -> Report:
    with CpuUse(system.pids) as cpu:
        time.sleep(seconds)
    wall = cpu.seconds.pop("wall")
    cpu.seconds.pop("bench processes", None)
    report: Report = {
        "cpu_percent": {name: round(100 * s / wall, 1) for name, s in cpu.seconds.items()},
        "scheduler_rss_mb": round(settled_rss_mb(system.scheduler_pid), 1),
        "kafka_rss_mb": round(settled_rss_mb(system.pids["kafka"]), 1),
    }
    # What a topic of its own costs the broker: the files its partitions keep open.
    report["kafka_open_files"], report["kafka_open_files_limit"] = open_files(system.pids["kafka"])
    return report


def _statements(engine: sa.Engine) -> dict[str, int]:
    """Statements run on the bench's database so far, by digest (TiDB's statement
    summary, per refresh window: a window that turns during the idle phase shows less)."""
    query = sa.text(
        "SELECT DIGEST_TEXT, SUM(EXEC_COUNT) FROM information_schema.statements_summary"
        " WHERE SCHEMA_NAME = DATABASE() GROUP BY DIGEST_TEXT"
    )
    with engine.connect() as conn:
        return {str(text): int(count) for text, count in conn.execute(query)}


def _busiest(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    """What TiDB was asked most during the idle phase, per second: so the next cost of
    an idle pipeline shows."""
    rates = {
        text[:120]: round((count - before.get(text, 0)) / seconds, 2)
        for text, count in after.items()
        if count > before.get(text, 0)
    }
    return dict(sorted(rates.items(), key=lambda item: -item[1])[:6])


def _create(tenant: Tenant, options: Options, say: Say) -> dict[str, str]:
    """Pipeline id -> its worker token."""
    say(f"creating {options.pipelines} pipelines, {options.concurrency} at a time")

    def create(index: int) -> tuple[str, str]:
        body = {
            "name": f"idle-{index:05d}",
            "chart": "charts/examples/echo",
            "topic": options.topic,
        }
        answer = tenant.http.post("/api/applications/bench/pipelines", json=body)
        if answer.status_code != 201:
            raise BenchFailed(f"creating a pipeline: {answer.status_code} {answer.text}")
        made = answer.json()
        return str(made["id"]), str(made["worker_token"])

    with concurrent.futures.ThreadPoolExecutor(options.concurrency) as pool:
        return dict(pool.map(create, range(options.pipelines)))


def _ready(engine: sa.Engine) -> int:
    query = sa.select(sa.func.count()).where(pipelines_table.c.state == "ready")
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _gauge(system: System, name: str) -> int:
    """The replica's gauge, summed over its labels."""
    metrics = scrape(system.metrics)
    return int(sum(v for (metric, _), v in metrics.items() if metric == name))


def _one_task_each(
    tenant: Tenant, engine: sa.Engine, ids: list[str], options: Options, say: Say
) -> Report:
    say(f"submitting one task to each of {len(ids)} pipelines")
    count = sa.select(sa.func.count()).select_from(tasks_table)

    def admitted() -> int:
        with engine.connect() as conn:
            return int(conn.execute(count).scalar_one()) - before

    before = 0
    before = admitted()  # the delayed tasks of ``--timers``, if any
    started = time.monotonic()

    def submit(index: int) -> None:
        path = f"/api/applications/bench/pipelines/idle-{index:05d}/tasks"
        answer = tenant.http.post(path, json={"tasks": [{"data": {"i": index}}]})
        if answer.status_code not in (200, 201, 202):
            raise BenchFailed(f"submitting: {answer.status_code} {answer.text}")

    with concurrent.futures.ThreadPoolExecutor(options.concurrency) as pool:
        list(pool.map(submit, range(len(ids))))
    submitted = time.monotonic() - started
    limit_s = max(120.0, len(ids) / 20)
    try:
        until(lambda: admitted() >= len(ids), limit_s, "one task of each pipeline admitted")
    except BenchFailed:
        # A figure too: how far it got.
        return {
            "submit_s": round(submitted, 1),
            "admitted_within_limit": admitted(),
            "limit_s": limit_s,
        }
    ended = time.monotonic() - started
    return {
        "submit_s": round(submitted, 1),
        "all_admitted_s": round(ended, 1),
        # How far admission trailed the submissions: the herd's own cost.
        "after_last_submit_s": round(ended - submitted, 1),
    }


def _failover(
    system: System, tokens: dict[str, str], say: Say, stack: contextlib.ExitStack
) -> Report:
    """Start a second replica, wait for the placement to give it its share, SIGKILL the
    first, and time until the survivor hosts every pipeline and each has answered a poll
    there (a worker's first poll after the takeover). ``stack`` stops the survivor."""
    if system.work is None:
        raise BenchFailed("the system's work directory is unknown")
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **system.env,
        "WSCHED_GRPC_PORT": str(grpc_port),
        "WSCHED_METRICS_PORT": str(metrics_port),
        "WSCHED_REPLICA_NAME": f"bench-{grpc_port}",
    }
    survivor = Service(
        name="scheduler-b",
        argv=[sys.executable, "-m", "services.cli", "scheduler"],
        log_path=system.work / "scheduler-b.log",
        env=env,
    )
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    total = len(tokens)
    say("starting a second replica")
    survivor.start()
    stack.callback(survivor.stop)
    survivor.wait_ready(lambda: port_open(metrics_port), timeout_s=60)

    def hosted(url: str) -> int:
        return int(sum(v for (m, _), v in scrape(url).items() if m == "wsched_hosted_pipelines"))

    until(
        lambda: hosted(metrics) > 0 and hosted(metrics) + hosted(system.metrics) >= total,
        600,
        "the placement giving the second replica its share",
    )
    moved = hosted(system.metrics)
    say(f"killing the replica holding {moved:,} of the pipelines (SIGKILL)")
    killed = time.monotonic()
    os.killpg(system.scheduler_pid, signal.SIGKILL)
    until(lambda: hosted(metrics) >= total, 600, "the survivor hosting every pipeline")
    hosted_s = time.monotonic() - killed
    polls = asyncio.run(_first_polls(f"127.0.0.1:{grpc_port}", tokens, deadline_s=600))
    return {
        "pipelines_moved": moved,
        "all_hosted_s": round(hosted_s, 1),
        "all_polled_s": round(time.monotonic() - killed, 1),
        "poll_rounds": polls,
        "survivor_rss_mb": round(settled_rss_mb(survivor.pid or 0), 1),
    }


async def _first_polls(target: str, tokens: dict[str, str], *, deadline_s: float) -> int:
    """Poll every pipeline (no wait) until each has answered OK; returns the rounds."""
    waiting = dict(tokens)
    rounds = 0
    gate = asyncio.Semaphore(64)
    started = time.monotonic()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = worker_pb2_grpc.WorkerStub(channel)

        async def poll(pipeline_id: str, token: str) -> bool:
            request = worker_pb2.PollRequest(
                pipeline_id=pipeline_id, worker="bench-failover", max_tasks=1, wait_ms=0
            )
            async with gate:
                try:
                    await stub.Poll(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=30
                    )
                except grpc.aio.AioRpcError:
                    return False
            return True

        while waiting:
            if time.monotonic() - started > deadline_s:
                raise BenchFailed(f"{len(waiting)} pipelines answered no poll in time")
            rounds += 1
            answered = await asyncio.gather(*(poll(p, t) for p, t in waiting.items()))
            for pipeline_id, ok in zip(list(waiting), answered, strict=True):
                if ok:
                    del waiting[pipeline_id]
            if waiting:
                await asyncio.sleep(0.5)
    return rounds
