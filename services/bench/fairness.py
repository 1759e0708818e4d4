"""``wsched bench-fairness``: does a tenant flooding at its quota hold another one back?

Two tenants on one API process and one scheduler replica. Tenant B submits single tasks
at a steady ``rate``, and a worker (a thread of this process) runs them as they come.
After a warm-up of B alone (not measured), the phase runs three times: B alone, B while
tenant A floods, and B alone again (the two runs alone show how much the shared machine
varies by itself). A floods with
``flood_clients`` connections sending batches of ``flood_batch`` tasks back to back,
held by its ``submit_rate`` quota (set by the operator's PATCH to ``flood_rate``) and
answered 429 beyond it, each client waiting out the Retry-After (a tenant submitting at
its limit) or not (``flood_honours_retry_after=False``: one hammering past it); A's
clients and its worker run in a process of their own.

Figures, per phase, for B: ``submit_p50/p99_ms`` (the POST until its 202) and
``end_to_end_p50/p99_ms`` (the POST's start until the worker's report of the task was
acknowledged, terminal in TiDB), split into its hops: ``dispatch_p50/p99_ms`` (the 202
until a poll handed the task to the worker: Kafka, admission, the long poll's wake-up)
and ``report_p50/p99_ms`` (the report sent until acknowledged: the flush); for the
database they share, ``database_write_p50/p99_ms`` (a one-row write transaction of this
process every 50 ms, as small as a quiet grain's: how much the flood slows TiDB itself);
for A: tasks accepted and requests refused per second.
``ratios`` divides B's p99s with the flood by B's alone: the goal is at most 1.5.
Every client runs on this machine, so their CPU counts against the API's; each phase
says how busy the whole machine was (``machine_busy_percent_of_all_cores``).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import sqlalchemy as sa

from protos.wsched.v1 import worker_pb2
from services.bench import system as sut
from services.bench.measure import CpuUse, percentile
from services.bench.report import machine
from services.bench.system import Pipeline, System, Tenant
from services.infra.cache import Cache
from services.store.engine import make_engine
from services.worker.client import SchedulerClient

Report = dict[str, Any]
#: How long B's last tasks may take to be run after a phase's submits end.
_DRAIN_S = 60.0


@dataclass(frozen=True, kw_only=True)
class Options:
    #: Seconds each phase submits for.
    seconds: float = 20.0
    #: B's tasks per second (single-task submits).
    rate: float = 20.0
    #: Seconds B runs alone before phase 1, not measured.
    warmup_s: float = 10.0
    #: A's submit_rate quota (tasks a second); its burst is one second of it.
    flood_rate: float = 500.0
    flood_batch: int = 50
    flood_clients: int = 8
    #: Whether A's clients wait out each 429's Retry-After (a client that submits at its
    #: limit) or send again at once (one that hammers the API past it).
    flood_honours_retry_after: bool = True


@dataclass(kw_only=True)
class _Flood:
    accepted: int = 0
    refused: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass(kw_only=True)
class _Worked:
    """When each task reached the worker, was reported, and the report acknowledged."""

    leased: dict[str, float] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class _Steady:
    started: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    submit_ms: list[float] = field(default_factory=list)
    failed: int = 0


def run(
    options: Options,
    *,
    cache: Cache,
    say: sut.Say,
    components: sut.Components | None = None,
) -> Report:
    """The figures of one run; ``components`` given means: use them, start none."""
    report: Report = {"machine": machine(), "workload": vars(options).copy()}
    with (
        sut.bench_system("fairness", cache=cache, say=say, components=components) as system,
        contextlib.ExitStack() as stack,
    ):
        a, b = Tenant(api=system.api), Tenant(api=system.api)
        stack.callback(a.http.close)
        stack.callback(b.http.close)
        _limit(a, options.flood_rate)
        steady = b.pipeline("steady", lease_timeout_s=60)
        flood = a.pipeline("flood", lease_timeout_s=60)
        # Kafka's JIT and TiDB's caches warm up in the first seconds a pipeline is used:
        # measured, that made the first phase's p99 several times the third's.
        say(f"warm-up: tenant B alone for {options.warmup_s:g} s, not measured")
        _phase(system, b, steady, None, replace(options, seconds=options.warmup_s), "warmup")
        say(f"phase 1: tenant B alone, {options.rate:g} tasks/s for {options.seconds:g} s")
        alone = _phase(system, b, steady, None, options, "alone")
        say(f"phase 2: the same while tenant A floods at {options.flood_rate:g} tasks/s")
        flooded = _phase(system, b, steady, (a, flood), options, "flooded")
        say("phase 3: tenant B alone again (how much the machine alone varies)")
        again = _phase(system, b, steady, None, options, "again")
        report.update(
            alone=alone,
            flooded=flooded,
            alone_again=again,
            ratios=_ratios(alone, again, flooded),
        )
    return report


def _limit(tenant: Tenant, rate: float) -> None:
    answer = tenant.http.patch(
        f"/api/tenants/{tenant.name}",
        json={"quotas": {"submit_rate": rate, "submit_burst": max(1, round(rate))}},
        headers={"Authorization": f"Bearer {sut.OPERATOR_KEY}"},
    )
    answer.raise_for_status()


def _ratios(alone: Report, again: Report, flooded: Report) -> Report:
    """B's p99s with the flood over B's alone (the better of the two runs alone, as the
    machine allows), and the two runs alone over each other: the noise."""
    out: Report = {}
    for name in ("submit_p99_ms", "end_to_end_p99_ms"):
        base = max(min(alone[name], again[name]), 0.001)
        out[name.removesuffix("_ms")] = round(flooded[name] / base, 2)
        out[f"{name.removesuffix('_ms')}_alone_vs_again"] = round(
            again[name] / max(alone[name], 0.001), 2
        )
    out["within_1_5x"] = out["submit_p99"] <= 1.5 and out["end_to_end_p99"] <= 1.5
    return out


def _phase(
    system: System,
    b: Tenant,
    steady: Pipeline,
    flooding: tuple[Tenant, Pipeline] | None,
    options: Options,
    label: str,
) -> Report:
    stop = threading.Event()
    worked = _Worked()
    flood = _Flood()
    writes: list[float] = []
    threads = [
        _thread(lambda: _work(system, steady, stop, worked)),
        threading.Thread(target=_probe_database, args=(system, stop, writes), daemon=True),
    ]
    threads[-1].start()
    spawn = multiprocessing.get_context("spawn")
    counts, halt = spawn.Array("d", 4), spawn.Event()
    flooder = None
    if flooding is not None:
        # A process of its own: its clients and worker would otherwise share this
        # process's interpreter lock with B's and delay B's timestamps.
        a, pipeline = flooding
        flooder = spawn.Process(
            target=_flood_process, args=(system, a.key, pipeline, options, halt, counts)
        )
        flooder.start()
    with CpuUse(system.pids) as cpu:
        steady_run = _submit_steady(system.api, b.key, steady, options, label)
        drain_by = time.monotonic() + _DRAIN_S
        while len(worked.done.keys() & steady_run.started.keys()) < len(steady_run.started):
            if time.monotonic() > drain_by:
                break
            time.sleep(0.1)
        stop.set()
        halt.set()
    for thread in threads:
        thread.join()
    if flooder is not None:
        flooder.join(30)
        flood = _Flood(
            accepted=int(counts[0]),
            refused=int(counts[1]),
            failed=int(counts[2]),
            seconds=counts[3],
        )
    return _figures(steady_run, worked, writes, flood, cpu, options)


def _probe_database(system: System, stop: threading.Event, out: list[float]) -> None:
    """Time a one-row write transaction every 50 ms until ``stop``: the database's own
    latency, beside which B's hops can be read."""
    engine = make_engine(system.database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE IF NOT EXISTS bench_probe (id INT PRIMARY KEY, n BIGINT)")
            )
            conn.execute(sa.text("REPLACE INTO bench_probe VALUES (1, 0)"))
        while not stop.wait(0.05):
            started = time.monotonic()
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE bench_probe SET n = n + 1 WHERE id = 1"))
            out.append((time.monotonic() - started) * 1000)
    finally:
        engine.dispose()


def _flood_process(
    system: System, key: str, pipeline: Pipeline, options: Options, halt: Any, counts: Any
) -> None:
    """Tenant A: its flooding clients and its worker, until ``halt``; the counts out."""
    stop = threading.Event()
    flood = _Flood()
    threads = [
        _thread(lambda: _work(system, pipeline, stop, _Worked())),
        _thread(lambda: _flood(system.api, key, pipeline, options, stop, flood)),
    ]
    halt.wait()
    stop.set()
    for thread in threads:
        thread.join()
    counts[:] = [flood.accepted, flood.refused, flood.failed, flood.seconds]


def _thread(target: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    """A thread with its own event loop: no client's work delays another's timestamps."""
    thread = threading.Thread(target=lambda: asyncio.run(target()), daemon=True)
    thread.start()
    return thread


def _submit_steady(api: str, key: str, pipeline: Pipeline, options: Options, label: str) -> _Steady:
    out = _Steady()
    count = round(options.seconds * options.rate)
    with httpx.Client(base_url=api, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        begun = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, begun + n / options.rate - time.monotonic()))
            task_id = f"{label}-{n:06d}"
            started = time.monotonic()
            answer = http.post(pipeline.path, params={"id": task_id}, json={"n": n})
            if answer.status_code != 202:
                out.failed += 1
                continue
            now = time.monotonic()
            out.submit_ms.append((now - started) * 1000)
            out.started[task_id] = started
            out.accepted[task_id] = now
    return out


async def _flood(
    api: str, key: str, pipeline: Pipeline, options: Options, stop: threading.Event, out: _Flood
) -> None:
    batch = {"tasks": [{"data": {"n": n}} for n in range(options.flood_batch)]}
    limits = httpx.Limits(max_connections=options.flood_clients)
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits, headers=headers) as http:

        async def client() -> None:
            while not stop.is_set():
                answer = await http.post(f"{pipeline.path}/tasks", json=batch)
                if answer.status_code == 202:
                    out.accepted += options.flood_batch
                elif answer.status_code == 429:
                    out.refused += 1
                    if options.flood_honours_retry_after:
                        await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                else:
                    out.failed += 1

        await asyncio.gather(*(client() for _ in range(options.flood_clients)))
    out.seconds = time.monotonic() - started


async def _work(system: System, pipeline: Pipeline, stop: threading.Event, worked: _Worked) -> None:
    """Lease and report tasks succeeded until ``stop``; ``worked`` gets each task's
    times."""
    client = SchedulerClient(
        addresses=[system.grpc], pipeline_id=pipeline.id, token=pipeline.token, worker="bench"
    )
    try:
        while not stop.is_set():
            reply = await client.poll(max_tasks=200, wait_ms=500)
            if not reply.tasks:
                continue
            leased = time.monotonic()
            results = [
                worker_pb2.TaskResult(
                    lease_token=t.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED
                )
                for t in reply.tasks
            ]
            reporting = time.monotonic()
            answer = await client.report(results)
            now = time.monotonic()
            for task, ack in zip(reply.tasks, answer.acks, strict=True):
                if ack.ack == worker_pb2.ACK_ACCEPTED:
                    worked.leased[task.task_id] = leased
                    worked.reported[task.task_id] = reporting
                    worked.done[task.task_id] = now
    finally:
        await client.close()


def _figures(
    steady: _Steady,
    worked: _Worked,
    writes: list[float],
    flood: _Flood,
    cpu: CpuUse,
    options: Options,
) -> Report:
    if not steady.submit_ms:
        raise sut.BenchFailed("no submit of tenant B was accepted")
    done = worked.done
    ends = [(done[i] - t) * 1000 for i, t in steady.started.items() if i in done]
    if not ends:
        raise sut.BenchFailed("no task of tenant B ran")
    ran = [i for i in steady.started if i in done]
    dispatch = [(worked.leased[i] - steady.accepted[i]) * 1000 for i in ran]
    report = [(done[i] - worked.reported[i]) * 1000 for i in ran]
    wall = cpu.seconds["wall"] or 1.0
    return {
        "b_tasks": len(steady.started),
        "b_refused_or_failed": steady.failed,
        "b_not_run": len(steady.started) - len(ends),
        "submit_p50_ms": round(percentile(steady.submit_ms, 0.5), 1),
        "submit_p99_ms": round(percentile(steady.submit_ms, 0.99), 1),
        "end_to_end_p50_ms": round(percentile(ends, 0.5), 1),
        "end_to_end_p99_ms": round(percentile(ends, 0.99), 1),
        "dispatch_p50_ms": round(percentile(dispatch, 0.5), 1),
        "dispatch_p99_ms": round(percentile(dispatch, 0.99), 1),
        "report_p50_ms": round(percentile(report, 0.5), 1),
        "report_p99_ms": round(percentile(report, 0.99), 1),
        "database_write_p50_ms": round(percentile(writes, 0.5), 1) if writes else None,
        "database_write_p99_ms": round(percentile(writes, 0.99), 1) if writes else None,
        "a_accepted_tasks_per_s": round(flood.accepted / (flood.seconds or 1.0), 1),
        "a_refused_requests_per_s": round(flood.refused / (flood.seconds or 1.0), 1),
        "a_failed_requests": flood.failed,
        "cpu_percent_of_a_core": {
            name: round(100 * seconds / wall, 1)
            for name, seconds in cpu.seconds.items()
            if name not in ("wall", "bench processes")
        },
        # Every process of the machine, the clients and workers too: near 100 % of the
        # cores, every latency grows with the load whoever brings it.
        "machine_busy_percent_of_all_cores": round(
            100 * cpu.machine_busy_s / wall / (os.cpu_count() or 1), 1
        ),
    }
