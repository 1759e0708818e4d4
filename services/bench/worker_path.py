"""``wsched bench-worker``: the real worker path, ``wsched worker`` and ``wsched executor``.

The API runs with the local deployer (as ``wsched dev`` does), so each pipeline's chart is
started as real processes: one agent (``wsched worker``) polling the scheduler over gRPC
and one executor (``wsched executor``) it hands each task to over its Unix socket. Two
pipelines, one after the other, each alone on the machine:

- ``shell``: the echo chart as shipped, each task forking a shell (``printf``);
- ``python``: the same chart with its step a Python handler
  (``services.bench.handlers:echo``) in the executor's process pool (its default size, 4:
  the local deployer, like the chart, sets no other).

For each, ``tasks`` tasks are submitted (batches of 1,000) the moment the pipeline is ready
(``cold``: fresh processes, the handler not imported yet, the grain just activated), and
once they have all succeeded, ``tasks`` more (``warm``). A phase is timed from its first
submit to its last task succeeded (read from ``/stats`` every 100 ms); ``first_success_s``
says how long the first task took, and ``steady_tasks_per_s`` is the rate from then on.
CPU-seconds per 1,000 tasks of the warm phase, by process: the agent, the executor (for
``shell``, its own CPU only: the shells it forks are the tasks' work, not ours; for
``python``, the executor with its pool's worker processes, where the handler runs),
the scheduler, the API, and Kafka and TiDB when the run started them (``_all``: their
sum, the whole run's cost of a task but the benchmark's own polling).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.bench.measure import cpu_seconds, descendants, scrape, tidb_writes
from services.bench.report import Report, machine
from services.bench.system import (
    BenchFailed,
    Components,
    Pipeline,
    Say,
    System,
    Tenant,
    bench_system,
)
from services.deploy import processes
from services.infra.cache import Cache

#: The Python handler the ``python`` pipeline runs (importable wherever ``wsched`` is).
HANDLER = "services.bench.handlers:echo"
_BATCH = 1000
_POLL_S = 0.1


@dataclass(frozen=True, kw_only=True)
class Options:
    tasks: int = 5000
    #: The agent's concurrency (``agent.concurrency`` of the chart's values).
    concurrency: int = 32
    timeout_s: float = 600.0


def run(
    options: Options, *, cache: Cache, say: Say, components: Components | None = None
) -> Report:
    """The figures of one run; ``components`` given means: use them, start none."""
    report: Report = {"machine": machine(), "workload": vars(options).copy()}
    data_dir = Path(tempfile.mkdtemp(prefix="wsched-bench-worker-data-"))
    env = {
        "WSCHED_DEPLOYER": "local",
        "WSCHED_DATA_DIR": str(data_dir),
    }
    try:
        with bench_system("worker", cache=cache, say=say, components=components, env=env) as system:
            tenant = Tenant(api=system.api)
            try:
                for kind in ("shell", "python"):
                    report[kind] = _pipeline_run(kind, system, tenant, data_dir, options, say)
            finally:
                tenant.http.close()
    except BaseException:
        # The agents' and executors' logs are there (``logs/`` of each pipeline).
        say(f"the workers' logs are kept in {data_dir}")
        raise
    shutil.rmtree(data_dir, ignore_errors=True)
    return report


def _values(kind: str, options: Options) -> dict[str, Any]:
    values: dict[str, Any] = {"agent": {"concurrency": options.concurrency}}
    if kind == "python":
        values["pipeline"] = [{"executor": "py", "handler": HANDLER}]
        values["executors"] = {"py": {}}
    return values


def _pipeline_run(
    kind: str, system: System, tenant: Tenant, data_dir: Path, options: Options, say: Say
) -> dict[str, Any]:
    say(f"{kind}: creating the pipeline (its agent and executor start as local processes)")
    pipeline = tenant.pipeline(f"worker-{kind}", lease_timeout_s=60, values=_values(kind, options))
    pids = _worker_pids(data_dir / "pipelines" / pipeline.id)
    say(f"{kind}: cold, {options.tasks} tasks")
    cold = _phase(tenant, pipeline, options, done_before=0, start=0)
    say(f"{kind}: warm, {options.tasks} tasks")
    own: dict[str, Callable[[], float]] = {
        "agent": lambda: cpu_seconds(pids["agent"]),
        # The shells a shell step forks are the task's work: the executor's own CPU only.
        # A handler runs in the executor's pool processes: counted with it.
        "executor": (
            (lambda: cpu_seconds(pids["executor"]))
            if kind == "shell"
            else (lambda: _own_tree_cpu(pids["executor"]))
        ),
        "scheduler": lambda: cpu_seconds(system.pids["scheduler"]),
        "api": lambda: cpu_seconds(system.pids["api"]),
    }
    # Kafka and TiDB too, when this run started them: the whole cost of a task shows.
    for name in ("kafka", "tidb"):
        if system.pids.get(name):
            own[name] = functools.partial(cpu_seconds, system.pids[name])
    before = {name: read() for name, read in own.items()}
    writes_before = _writes(system)
    warm = _phase(tenant, pipeline, options, done_before=options.tasks, start=options.tasks)
    per_1000 = {
        name: round((read() - before[name]) * 1000 / options.tasks, 3) for name, read in own.items()
    }
    writes = {
        name: round((value - writes_before[name]) * 1000 / options.tasks, 1)
        for name, value in _writes(system).items()
    }
    return {
        "concurrency": options.concurrency,
        "cold": cold,
        "warm": warm,
        "warm_cpu_s_per_1000_tasks": per_1000,
        "warm_cpu_s_per_1000_tasks_worker_side": round(per_1000["agent"] + per_1000["executor"], 3),
        "warm_cpu_s_per_1000_tasks_all": round(sum(per_1000.values()), 3),
        "warm_writes_per_1000_tasks": writes,
    }


def _writes(system: System) -> dict[str, float]:
    """The grains' flushes (the scheduler's count) and TiDB's write transactions so far:
    a report is acknowledged once its flush commits, so small reports cost transactions."""
    samples = scrape(system.metrics)
    found = {"flushes": samples.get(("wsched_flush_seconds_count", ()), 0.0)}
    if system.tidb_metrics:
        found["tidb_transactions"] = tidb_writes(system.tidb_metrics)["txns"]
    return found


def _phase(
    tenant: Tenant, pipeline: Pipeline, options: Options, *, done_before: int, start: int
) -> dict[str, Any]:
    """Submit ``options.tasks`` tasks and time them until every one has succeeded."""
    began = time.monotonic()
    for first in range(start, start + options.tasks, _BATCH):
        last = min(first + _BATCH, start + options.tasks)
        body = {"tasks": [{"data": {"message": f"task {n}"}} for n in range(first, last)]}
        tenant.http.post(f"{pipeline.path}/tasks", json=body).raise_for_status()
    submitted_s = time.monotonic() - began
    target = done_before + options.tasks
    first_success_s: float | None = None
    deadline = began + options.timeout_s
    while True:
        counts = tenant.stats(pipeline)["counts"]
        done = int(counts.get("succeeded", 0))
        now = time.monotonic()
        if first_success_s is None and done > done_before:
            first_success_s = now - began
        if done >= target:
            break
        failed = int(counts.get("dead", 0)) + int(counts.get("failed", 0))
        if failed:
            raise BenchFailed(f"{failed} tasks of {pipeline.path} failed: see the agent's log")
        if now > deadline:
            raise BenchFailed(
                f"{done - done_before} of {options.tasks} tasks succeeded within "
                f"{options.timeout_s:g} s"
            )
        time.sleep(_POLL_S)
    elapsed = now - began
    steady = elapsed - (first_success_s or 0.0)
    return {
        "tasks": options.tasks,
        "seconds": round(elapsed, 2),
        "tasks_per_s": round(options.tasks / elapsed),
        "submitted_in_s": round(submitted_s, 2),
        "first_success_s": round(first_success_s or elapsed, 2),
        "steady_tasks_per_s": round(options.tasks / steady) if steady > 0 else None,
    }


def _worker_pids(directory: Path) -> dict[str, int]:
    """The agent's and the executor's process ids, from the local deployer's record."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = {
            "agent" if proc.role == processes.AGENT else "executor": proc.pid
            for proc in processes.read_record(directory)
        }
        if {"agent", "executor"} <= found.keys():
            return found
        time.sleep(0.1)
    raise BenchFailed(f"no agent and executor recorded in {directory}")


def _own_tree_cpu(pid: int) -> float:
    """User + system CPU of a process and its live descendants, each its own only."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))
