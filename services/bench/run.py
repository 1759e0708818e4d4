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
5. **latency**: open-loop submits (``services/bench/latency.py``): single tasks at 1,000
   a second, then batches of 1,000 at 5 a second, on pipelines without workers;
   ``single_submit_p99_ms`` and ``batch_submit_p99_ms`` are timed from each request's
   scheduled send time.
6. **backlog**: the backlog tasks submitted with no worker running; ``backlog_rss_mb`` is
   the scheduler's RSS once the grain reports them all admitted and queued.

The throughput and paced phases also report TiDB's own count of what it wrote per task
(``tidb_writes``, from its status port) and the CPU-seconds of every process.

The system under test and the workload's processes are in ``system.py``.

Every process started here is stopped on the way out, on error and on Ctrl-C (SIGTERM
is turned into the same interrupt).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

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
from services.bench.system import (
    BenchFailed,
    Components,
    Options,
    Pipeline,
    Run,
    Say,
    Tenant,
    module_service,
    start_components,
    start_system,
    submit_client,
    summary_of,
    until,
    worker_processes,
)
from services.infra.cache import Cache

Report = dict[str, Any]

# -- measuring the scheduler -----------------------------------------------------------------


def _succeeded(run: Run, pipeline: Pipeline, count: int, what: str) -> None:
    timeout = 600 + count / 50
    until(lambda: run.tenant.succeeded(pipeline) >= count, timeout, what, pause_s=0.5)


def _admitted(run: Run, pipeline: Pipeline) -> float:
    return _events(run, pipeline, ("admitted",))["admitted"]


def _events(run: Run, pipeline: Pipeline, events: Sequence[str]) -> dict[str, float]:
    samples = scrape(run.system.metrics)
    labels = {event: (("event", event), ("pipeline", pipeline.id)) for event in events}
    return {event: samples.get(("wsched_tasks_total", key), 0.0) for event, key in labels.items()}


def _first_writes(run: Run, pipeline: Pipeline) -> dict[str, float]:
    """How the phase's tasks got their rows: inserted at admission, or held in memory
    (``WSCHED_WRITE_DELAY_MS``, design D2) and then written once at their end or pinned
    (written before it, and again at it)."""
    seen = _events(run, pipeline, ("admitted", "held", "written_once", "pinned"))
    return {
        "at_admission": seen["admitted"] - seen["held"],
        "held_written_once": seen["written_once"],
        "held_pinned": seen["pinned"],
    }


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
    until(lambda: _admitted(run, pipeline) >= total, 600, "the held tasks admitted")
    with worker_processes(run, pipeline, 1, hold=opts.hold):

        def all_leased() -> bool:
            leased = pipeline_gauge(run.system.metrics, "wsched_pipeline_leased", pipeline.id)
            return leased >= opts.hold

        until(all_leased, 600, f"{opts.hold} leases held")
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
                "first_writes": _first_writes(run, pipeline),
            }
        },
    }


def _tidb_writes(run: Run) -> dict[str, float] | None:
    return tidb_writes(run.system.tidb_metrics) if run.system.tidb_metrics else None


def _writes_since(run: Run, before: dict[str, float] | None, tasks: int) -> dict[str, float]:
    after = _tidb_writes(run)
    return writes_per_task(before, after, tasks) if before and after else {}


def _cpu_per_1000_tasks(cpu: CpuUse, tasks: int) -> dict[str, float]:
    """The CPU seconds each of the system's processes used per 1,000 of ``tasks``."""
    return {
        name: round(seconds * 1000 / tasks, 3)
        for name, seconds in cpu.seconds.items()
        if name not in ("wall", "bench processes")
    }


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
        # The system's processes only: the workers are counted when they are waited for.
        with CpuUse(run.system.pids) as cpu:
            submit_client(run, pipeline, count, rate=rate)
            _succeeded(run, pipeline, count, "every paced task succeeded")
        after = dispatch_buckets(run.system.metrics)
        writes = _writes_since(run, written, count)
        first_writes = _first_writes(run, pipeline)
    return {
        "dispatch_p99_ms": round(histogram_quantile(0.99, before, after) * 1000, 2),
        "details": {
            "paced": {
                "offered_tasks_per_s": round(rate, 1),
                "tasks": count,
                "dispatch_p50_ms": round(histogram_quantile(0.50, before, after) * 1000, 2),
                # Half the peak rate: tasks hardly wait, the backlog stays near empty.
                "tidb_writes": writes,
                "first_writes": first_writes,
                "cpu_s_per_1000_tasks": _cpu_per_1000_tasks(cpu, count),
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
        client = module_service(
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
        summary = summary_of(client, out, f"the {mode} latency client")
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

    written = _tidb_writes(run)
    with PeakRss(pid) as peak:
        summary = submit_client(run, pipeline, opts.backlog)
        until(lambda: backlog() >= opts.backlog, 600 + opts.backlog / 100, "the backlog admitted")
        admitted_s = time.time() - summary["first_submit_unix"]
    time.sleep(3)
    rss = settled_rss_mb(pid)
    # /stats reads the counters the grain flushes; give it a few flushes to catch up.
    with contextlib.suppress(BenchFailed):
        until(lambda: run.tenant.stats(pipeline)["backlog"] >= opts.backlog, 15, "/stats")
    admission_writes = _writes_since(run, written, opts.backlog)
    stats_backlog = run.tenant.stats(pipeline)["backlog"]
    return {
        "backlog_rss_mb": round(rss, 1),
        "details": {
            "backlog": {
                "tasks": opts.backlog,
                "admitted_tasks_per_s": round(opts.backlog / admitted_s, 1),
                "peak_rss_mb": round(peak.peak_mb, 1),
                "stats_backlog": stats_backlog,
                "grain_backlog": backlog(),
                # Submitting and admitting the backlog, per task (no task has run yet).
                "tidb_writes_at_admission": admission_writes,
                "drain": _drain(run, pipeline, min(opts.tasks, opts.backlog // 10)),
            }
        },
    }


def _drain(run: Run, pipeline: Pipeline, count: int) -> dict[str, Any]:
    """The workers run ``count`` tasks from the front of the backlog, which stays nearly
    whole behind them: what running a task costs TiDB behind a big backlog (the window
    refilled from the store, each task updated at its end). Added to the writes of its
    admission, it is a task's whole cost there; divided by the tasks that ended, as the
    workers run on while they are stopped."""
    if count <= 0:
        return {}
    run.say(f"backlog: the workers run {count:,} tasks from its front")
    written = _tidb_writes(run)
    with CpuUse(run.system.pids) as cpu, worker_processes(run, pipeline, run.options.workers):
        _succeeded(run, pipeline, count, "the drained tasks")
    time.sleep(3)  # the last reports' flushes, and the counters /stats reads
    ended = run.tenant.succeeded(pipeline)
    return {
        "tasks_succeeded": ended,
        "tidb_writes": _writes_since(run, written, ended),
        "first_writes": _first_writes(run, pipeline),
        "cpu_s_per_1000_tasks": _cpu_per_1000_tasks(cpu, ended),
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
