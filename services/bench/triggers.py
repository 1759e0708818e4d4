"""``wsched bench-schedules``: how many schedule fire times a scheduler replica admits,
and how late, with Kafka and TiDB on the machine.

Three phases, each on pipelines of its own (``0`` skips one):

1. **admission**: ``schedules`` schedules of ``@every <every_s>`` spread over ``pipelines``
   pipelines (so ``schedules / every_s`` fire times a second), no workers. Over a window
   of ``measure_s`` after a warm-up: ``triggers_per_s`` is the runs whose task row was
   created in the window, per second; ``lateness_p50/p99_ms`` is, for the runs of fire
   times inside the window, the grain's clock when it made the run minus the nominal fire
   time (the run's transaction commits a few ms later); ``due_in_window`` and
   ``admitted_of_due`` show whether it kept up. ``scheduler_rss_mb`` is the scheduler's
   peak RSS in the window, beside ``idle_rss_mb`` before any schedule existed.
2. **dispatch**: ``dispatch_schedules`` schedules on one pipeline with bench workers
   running: lateness from the nominal fire time to the lease (``started_at``), p50/p99.
3. **delayed**: ``delayed`` tasks due evenly over ``delayed_span_s``, with bench workers:
   lateness from the due time to the lease, and the scheduler's RSS over its idle figure
   (the timers beyond the heap's 10,000 wait in TiDB).

Definitions are written straight into the ``schedules`` table, as the API writes them,
and announced with one ``ScheduleChanged`` record each: 50,000 HTTP creates would make
the set-up the longest part of the run and measure the API, not the firing. Fire times
are spread evenly over the seconds of the interval. The figures are printed beside
Dapr's published ones, which come from other machines: a reference, not a comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from services.bench.measure import CpuUse, PeakRss, percentile, settled_rss_mb
from services.bench.report import machine, versions
from services.bench.system import (
    Components,
    Pipeline,
    Run,
    Say,
    System,
    Tenant,
    start_components,
    start_system,
    submit_client,
    worker_processes,
)
from services.bench.system import (
    Options as TaskOptions,
)
from services.infra.cache import Cache
from services.kafka.producer import KafkaProducer
from services.placement import Route
from services.store.engine import make_engine
from services.store.schema import schedules, tasks

Report = dict[str, Any]
#: Published figures for the same kind of load, for the reader's orientation.
DAPR = {
    "dapr_scheduler_triggers_per_s": 4582,
    "dapr_scheduler_setup": "3 replicas, 50,000 reminders (Dapr's published performance figures)",
    "dapr_v1_17_triggers_per_s": 15463,
}


#: What the default lead of the delayed phase assumes one grain admits a second while it
#: fires nothing (about 5,000 measured on a 2-core machine, with room).
_ADMITTED_PER_S = 4000


@dataclass(frozen=True, kw_only=True)
class Options:
    schedules: int = 50_000
    every_s: int = 10
    pipelines: int = 5
    warmup_s: float = 20.0
    measure_s: float = 60.0
    dispatch_schedules: int = 10_000
    workers: int = 2
    #: Pause between phases, so that one's catching up does not fall into the next.
    settle_s: float = 15.0
    #: Delayed tasks, due over ``delayed_span_s`` from ``delayed_lead_s`` after the phase
    #: starts.
    delayed: int = 1_000_000
    delayed_span_s: float = 600.0
    #: The first due time is this long after the phase starts; None: long enough for the
    #: scheduler to admit every task first at 4,000 a second (a minute at least), so that
    #: the phase measures the timers, not one grain admitting while it fires (see README).
    delayed_lead_s: float | None = None

    @property
    def lead_s(self) -> float:
        if self.delayed_lead_s is not None:
            return self.delayed_lead_s
        return max(60.0, self.delayed / _ADMITTED_PER_S)

    @classmethod
    def build(
        cls,
        *,
        schedules: int | None,
        quick: bool,
        delayed: int | None = None,
        dispatch: int | None = None,
        delayed_span_s: float | None = None,
        delayed_lead_s: float | None = None,
    ) -> Options:
        base = (
            cls(
                schedules=500,
                pipelines=2,
                warmup_s=5,
                measure_s=10,
                dispatch_schedules=200,
                settle_s=2,
                delayed=2000,
                delayed_span_s=20,
                delayed_lead_s=5,
            )
            if quick
            else cls()
        )
        base = replace(base, schedules=schedules) if schedules is not None else base
        base = replace(base, delayed=delayed) if delayed is not None else base
        if delayed_span_s is not None:
            base = replace(base, delayed_span_s=delayed_span_s)
        if delayed_lead_s is not None:
            base = replace(base, delayed_lead_s=delayed_lead_s)
        return replace(base, dispatch_schedules=dispatch) if dispatch is not None else base


@dataclass(frozen=True, kw_only=True)
class Window:
    start: dt.datetime
    end: dt.datetime


def _define(
    database_url: str, pipelines: Sequence[Pipeline], count: int, every_s: int, first: dt.datetime
) -> list[tuple[Route, str]]:
    """Insert ``count`` interval schedules round-robin over the pipelines, their first fire
    times spread over the interval's seconds from ``first``; (pipeline's route, schedule id)."""
    now = dt.datetime.now(dt.UTC)
    rows, made = [], []
    for index in range(count):
        pipeline = pipelines[index % len(pipelines)]
        start_at = first + dt.timedelta(seconds=index % every_s)
        doc = {
            "every_s": float(every_s),
            "timezone": "UTC",
            "data_json": "{}",
            "start_at": start_at.isoformat(),
            "created_at": now.isoformat(),
            "catchup": {"window_s": 3600.0, "policy": "all", "after_pause": False},
            "input": {"every": f"{every_s}s"},
        }
        schedule_id = str(uuid.uuid4())
        made.append((pipeline.route, schedule_id))
        rows.append(
            {
                "id": schedule_id,
                "pipeline_id": pipeline.id,
                "name": f"s{index}",
                "spec_json": json.dumps(doc),
                "paused": False,
                "version": 1,
                "created_at": now.replace(tzinfo=None),
                "updated_at": now.replace(tzinfo=None),
            }
        )
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for offset in range(0, len(rows), 1000):
                conn.execute(sa.insert(schedules), rows[offset : offset + 1000])
    finally:
        engine.dispose()
    return made


def _undefine(database_url: str, pipeline_ids: Sequence[str]) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(schedules).where(schedules.c.pipeline_id.in_(pipeline_ids)))
    finally:
        engine.dispose()


def _announce(bootstrap: str, made: Sequence[tuple[Route, str]]) -> None:
    async def send() -> None:
        async with KafkaProducer(bootstrap=bootstrap) as producer:
            for start in range(0, len(made), 1000):
                await asyncio.gather(
                    *(producer.schedule_changed(p, s, 1) for p, s in made[start : start + 1000])
                )

    asyncio.run(send())


def _runs(
    database_url: str, pipeline_ids: Sequence[str], window: Window, *, since: str
) -> list[tuple[dt.datetime, dt.datetime | None, dt.datetime]]:
    """(fire_at, started_at, created_at) of the runs with ``since`` in the window."""
    column = tasks.c.fire_at if since == "fire_at" else tasks.c.created_at
    query = sa.select(tasks.c.fire_at, tasks.c.started_at, tasks.c.created_at).where(
        tasks.c.pipeline_id.in_(pipeline_ids),
        tasks.c.schedule_id.is_not(None),
        column >= window.start.replace(tzinfo=None),
        column < window.end.replace(tzinfo=None),
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [(r.fire_at, r.started_at, r.created_at) for r in conn.execute(query)]
    finally:
        engine.dispose()


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(values, 0.5) * 1000, 1),
        "p99": round(percentile(values, 0.99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def _sleep_until(at: dt.datetime) -> None:
    time.sleep(max(0.0, (at - dt.datetime.now(dt.UTC)).total_seconds()))


def _whole_second(at: dt.datetime) -> dt.datetime:
    return at.replace(microsecond=0) + dt.timedelta(seconds=1)


def _admission_phase(run: Run, options: Options, components: Components) -> Report:
    system = run.system
    pipelines = [
        run.tenant.pipeline(f"adm-{i}", lease_timeout_s=30) for i in range(options.pipelines)
    ]
    idle = settled_rss_mb(system.scheduler_pid)
    first = _whole_second(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10))
    run.say(f"admission: {options.schedules:,} schedules @every {options.every_s}s")
    made = _define(system.database_url, pipelines, options.schedules, options.every_s, first)
    _announce(components.bootstrap, made)
    window = Window(
        start=first + dt.timedelta(seconds=options.warmup_s),
        end=first + dt.timedelta(seconds=options.warmup_s + options.measure_s),
    )
    _sleep_until(window.start)
    ids = [p.id for p in pipelines]
    with PeakRss(system.scheduler_pid) as peak, CpuUse(system.pids) as cpu:
        _sleep_until(window.end)
    time.sleep(5)  # runs of the window's last fire times still in their transaction
    admitted = _runs(system.database_url, ids, window, since="created_at")
    due = _runs(system.database_url, ids, window, since="fire_at")
    lateness = [(created - fire).total_seconds() for fire, _, created in due]
    expected = int(options.schedules / options.every_s * options.measure_s)
    _undefine(system.database_url, ids)
    _announce(components.bootstrap, made)  # the grains drop them
    time.sleep(options.settle_s)  # and finish what they were catching up, before the next
    return {
        "triggers_per_s": round(len(admitted) / options.measure_s, 1),
        "trigger_lateness_ms": _ms(lateness),
        "due_in_window": expected,
        "admitted_of_due": len(due),
        "scheduler_rss_mb": round(peak.peak_mb, 1),
        "idle_rss_mb": round(idle, 1),
        "cpu_seconds": cpu.seconds,
    }


def _dispatch_phase(run: Run, options: Options, components: Components) -> Report:
    system = run.system
    pipeline = run.tenant.pipeline("dispatch", lease_timeout_s=30)
    first = _whole_second(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10))
    run.say(f"dispatch: {options.dispatch_schedules:,} schedules with {options.workers} workers")
    made = _define(
        system.database_url, [pipeline], options.dispatch_schedules, options.every_s, first
    )
    window = Window(
        start=first + dt.timedelta(seconds=options.warmup_s),
        end=first + dt.timedelta(seconds=options.warmup_s + options.measure_s),
    )
    with worker_processes(run, pipeline, options.workers):
        _announce(components.bootstrap, made)
        _sleep_until(window.end)
        time.sleep(5)
    due = _runs(system.database_url, [pipeline.id], window, since="fire_at")
    started = [(s - f).total_seconds() for f, s, _ in due if s is not None]
    _undefine(system.database_url, [pipeline.id])
    _announce(components.bootstrap, made)
    return {
        "fire_times_per_s": round(options.dispatch_schedules / options.every_s, 1),
        "dispatch_lateness_ms": _ms(started),
        "due_in_window": int(options.dispatch_schedules / options.every_s * options.measure_s),
        "dispatched_of_due": len(started),
    }


def _delayed_phase(run: Run, options: Options) -> Report:
    """Delayed tasks due over the span, with the bench workers running: lateness is each
    task's lease (``started_at``) minus its due time, over the tasks submitted at least a
    second before they were due. Workers are needed: due tasks join the grain's ready
    window (2,000 tasks) only while it has room, so without them firing stops once the
    window is full. RSS is the scheduler's peak against its idle figure."""
    system = run.system
    pipeline = run.tenant.pipeline("delayed", lease_timeout_s=30)
    idle = settled_rss_mb(system.scheduler_pid)
    first = time.time() + options.lead_s
    last = first + options.delayed_span_s
    run.say(f"delayed: {options.delayed:,} tasks due over {options.delayed_span_s:.0f}s")
    with PeakRss(system.scheduler_pid) as peak, worker_processes(run, pipeline, options.workers):
        summary = submit_client(run, pipeline, options.delayed, due=(first, last))
        time.sleep(max(0.0, last - time.time()) + 10)
    counted, started = _delayed_lateness(system.database_url, pipeline.id)
    tail = _late_by_window(system.database_url, pipeline.id, first=first)
    analyzed = _analyze_jobs(system.database_url, since=first - options.lead_s, first=first)
    return {
        "tasks": options.delayed,
        "due_per_s": round(options.delayed / options.delayed_span_s, 1),
        "lead_s": round(options.lead_s, 1),
        "workers": options.workers,
        "submitted_s": round(summary["last_ack_unix"] - summary["first_submit_unix"], 1),
        "counted": counted,
        "started": len(started),
        "start_lateness_ms": _ms(started),
        "late_over_1s_by_window": tail,
        "tidb_analyze_jobs": analyzed,
        "scheduler_rss_mb": round(peak.peak_mb, 1),
        "idle_rss_mb": round(idle, 1),
        "rss_over_idle_mb": round(peak.peak_mb - idle, 1),
    }


def _delayed_lateness(database_url: str, pipeline_id: str) -> tuple[int, list[float]]:
    """(tasks submitted a second or more ahead, their lateness at lease in seconds)."""
    # In TiDB: a million rows' worth of datetimes would cost the bench more memory than the
    # scheduler it measures.
    ahead = sa.func.timestampdiff(sa.text("MICROSECOND"), tasks.c.created_at, tasks.c.due_at)
    late = sa.func.timestampdiff(sa.text("MICROSECOND"), tasks.c.due_at, tasks.c.started_at)
    mine = (tasks.c.pipeline_id == pipeline_id, ahead >= 1_000_000)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            counted = conn.execute(sa.select(sa.func.count()).where(*mine)).scalar_one()
            query = sa.select(late).where(*mine, tasks.c.started_at.is_not(None))
            started = [us / 1e6 for us in conn.execute(query).scalars().all()]
    finally:
        engine.dispose()
    return int(counted), started


def _late_by_window(
    database_url: str, pipeline_id: str, *, first: float, window_s: int = 10
) -> list[dict[str, float]]:
    """Where in the span the tail sits: per ``window_s`` of due times (from the first due
    time), the tasks started more than a second late and the latest start, for windows
    that have any. Counted in TiDB, as ``_delayed_lateness`` is."""
    late = sa.func.timestampdiff(sa.text("MICROSECOND"), tasks.c.due_at, tasks.c.started_at)
    start = dt.datetime.fromtimestamp(first, dt.UTC).replace(tzinfo=None)
    offset = sa.func.timestampdiff(sa.text("SECOND"), sa.literal(start), tasks.c.due_at)
    window = sa.func.floor(offset / window_s).label("window")
    query = (
        sa.select(window, sa.func.count(), sa.func.max(late))
        .where(tasks.c.pipeline_id == pipeline_id, late > 1_000_000)
        .group_by(window)
        .order_by(window)
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        engine.dispose()
    return [
        {"from_s": int(w) * window_s, "late_over_1s": int(n), "max_ms": round(m / 1000, 1)}
        for w, n, m in rows
    ]


def _analyze_jobs(database_url: str, *, since: float, first: float) -> list[dict[str, Any]] | None:
    """TiDB's statistics jobs (its automatic ``ANALYZE`` of a table after many changes)
    that started during the phase: when (seconds after the first due time; negative:
    before it), how long, on which table. They take CPU on the machine the phase runs
    on. None when TiDB does not say (``mysql.analyze_jobs`` unreadable)."""
    query = sa.text(
        "SELECT table_name, UNIX_TIMESTAMP(start_time), UNIX_TIMESTAMP(end_time), state "
        "FROM mysql.analyze_jobs WHERE start_time >= FROM_UNIXTIME(:since) "
        "ORDER BY start_time"
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"since": int(since)}).all()
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return [
        {
            "table": str(table),
            "from_s": round(float(start) - first, 1),
            "seconds": round(float(end) - float(start), 1) if end is not None else None,
            "state": str(state),
        }
        for table, start, end, state in rows
    ]


def run(
    options: Options, *, cache: Cache, say: Say, components: Components | None = None
) -> Report:
    """Every phase asked for; ``components`` given means: use them, start none."""
    for chatty in ("httpx", "alembic", "aiokafka"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="wsched-bench-schedules-"))
    started = time.monotonic()
    try:
        report = _run(options, cache=cache, say=say, components=components, work=work)
    except BaseException:
        say(f"stopped; the logs are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - started)
    return report


def _run(
    options: Options, *, cache: Cache, say: Say, components: Components | None, work: Path
) -> Report:
    report: Report = {"workload": vars(options), "reference": DAPR}
    with contextlib.ExitStack() as stack:
        if components is None:
            components = stack.enter_context(start_components(cache, work, say))
        report["machine"], report["versions"] = machine(), versions(components.tidb_root_url)
        system: System = stack.enter_context(start_system(components, work, say))
        tenant = Tenant(api=system.api)
        stack.callback(tenant.http.close)
        bench = Run(system=system, tenant=tenant, options=TaskOptions(), work=work, say=say)
        if options.schedules:
            report["admission"] = _admission_phase(bench, options, components)
        if options.dispatch_schedules:
            report["dispatch"] = _dispatch_phase(bench, options, components)
        if options.delayed:
            report["delayed"] = _delayed_phase(bench, options)
    return report


def render(report: Report) -> str:
    """The figures in a few lines, beside Dapr's."""
    ref, host = report["reference"], report["machine"]
    return "\n".join(
        [
            f"machine: {host['cores']} cores, {host['cpu']}, load {host['load_average_1m']}",
            *_admission_lines(report.get("admission"), report["workload"]),
            *_dispatch_lines(report.get("dispatch"), report["workload"]),
            *_delayed_lines(report.get("delayed")),
            "reference (other machines): Dapr Scheduler "
            f"{ref['dapr_scheduler_triggers_per_s']:,}/s ({ref['dapr_scheduler_setup']}); "
            f"Dapr v1.17 {ref['dapr_v1_17_triggers_per_s']:,}/s",
        ]
    )


def _admission_lines(adm: Report | None, work: Report) -> list[str]:
    if adm is None:
        return []
    late = adm["trigger_lateness_ms"]
    return [
        f"admission: {work['schedules']:,} schedules @every {work['every_s']}s on "
        f"{work['pipelines']} pipelines, no workers",
        f"  triggers admitted/s: {adm['triggers_per_s']:,} "
        f"(due {adm['due_in_window']:,}, admitted {adm['admitted_of_due']:,})",
        f"  lateness ms: p50 {late['p50']}, p99 {late['p99']}, max {late['max']}",
        f"  scheduler RSS MB: {adm['scheduler_rss_mb']} (idle {adm['idle_rss_mb']})",
        f"  CPU s in the window: {adm['cpu_seconds']}",
    ]


def _dispatch_lines(dis: Report | None, work: Report) -> list[str]:
    if dis is None:
        return []
    late = dis["dispatch_lateness_ms"]
    return [
        f"dispatch: {work['dispatch_schedules']:,} schedules "
        f"({dis['fire_times_per_s']:,} fire times/s), {work['workers']} workers",
        f"  nominal time to lease ms: p50 {late['p50']}, p99 {late['p99']}, "
        f"max {late['max']} ({dis['dispatched_of_due']:,} of {dis['due_in_window']:,})",
    ]


def _delayed_lines(delayed: Report | None) -> list[str]:
    if delayed is None:
        return []
    late = delayed["start_lateness_ms"]
    return [
        f"delayed: {delayed['tasks']:,} tasks, {delayed['due_per_s']:,} due a second "
        f"(submitted in {delayed['submitted_s']} s, the first due after {delayed['lead_s']} s), "
        f"{delayed['workers']} workers, {delayed['started']:,} of {delayed['counted']:,} started",
        f"  due to lease ms: p50 {late['p50']}, p99 {late['p99']}, max {late['max']}",
        *(
            f"  due {w['from_s']}-{w['from_s'] + 10} s into the span: "
            f"{w['late_over_1s']:,} started over 1 s late (latest {w['max_ms']:,} ms)"
            for w in delayed.get("late_over_1s_by_window", [])
        ),
        *(
            f"  TiDB analyzed {job['table']} from {job['from_s']} s into the span "
            f"for {job['seconds']} s ({job['state']})"
            for job in delayed.get("tidb_analyze_jobs") or []
        ),
        f"  scheduler RSS MB: peak {delayed['scheduler_rss_mb']}, idle "
        f"{delayed['idle_rss_mb']} (+{delayed['rss_over_idle_mb']})",
    ]
