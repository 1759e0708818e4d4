"""``wsched bench-celery``: Celery 5 with Redis on the workload ``wsched bench`` runs.

What most Python users would pick instead of us, measured the way we measure ourselves:
no-op tasks with 100-byte data and a result backend, submitted in batches of 1,000 (a
``group`` of signatures each) by a client process of their own, run by one prefork worker
with ``cores x 2`` processes, Redis as broker and result backend on a fresh data directory.
Each setup runs alone, on its own Redis, one after the other:

* **a**, Celery's fastest documented setup: early acks (the default), a prefetch
  multiplier of 128 ("Optimizing": 64 or 128 for many short tasks), Redis without
  persistence.
* **b**, guarantees like ours: ``task_acks_late=True``, ``worker_prefetch_multiplier=1``
  and Redis with ``appendonly yes`` + ``appendfsync everysec``.

``e2e_tasks_per_s`` is the results in the backend / (the last one's ``date_done`` - the
client's first submit), read once every task has a result, as ``wsched bench`` reads
``finished_at`` from its store. CPU seconds per process come from /proc: the worker with
its pool's children, redis-server, and the client's own count of its life.

The submitting process has no result backend configured: Celery's Redis backend would
otherwise SUBSCRIBE to every submitted task's channel, and 100,000 results nobody reads
overflow Redis's pub/sub output buffer. The worker still stores (and publishes) every
result; only the client's side of ``.get()`` is left out, as our client reads no results.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from services.bench.celery_app import RESULT_DB, SETUPS, Setup
from services.bench.celery_report import CeleryBenchFailed, figures, result_of
from services.bench.client import TASK_DATA_BYTES
from services.bench.measure import tree_cpu_seconds
from services.bench.report import machine
from services.bench.run import _sigterm_interrupts
from services.infra.process import Service, free_port, port_open

Report = dict[str, Any]
Say = Callable[[str], None]

#: Tasks per ``group``, as our client's batches.
BATCH = 1000


def concurrency() -> int:
    """Prefork pool processes: cores x 2."""
    return (os.cpu_count() or 1) * 2


# -- processes ---------------------------------------------------------------------------------


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise CeleryBenchFailed(
            "redis-server is not installed: `make bench` installs it (Debian's redis-server), "
            "or run `apt-get install -y redis-server`"
        )
    return binary


@dataclass(frozen=True, kw_only=True)
class RedisServer:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


@contextlib.contextmanager
def start_redis(setup: Setup, work: Path) -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, its data under ``work``; stopped on exit."""
    data = work / f"redis-{setup.key}"
    data.mkdir(parents=True)
    port = free_port()
    server = Service(
        name=f"redis-{setup.key}",
        argv=[
            redis_binary(),
            *("--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes"),
            *("--dir", str(data), "--daemonize", "no", "--logfile", ""),
            *setup.redis_config(),
        ],
        log_path=work / f"redis-{setup.key}.log",
    )
    server.start()
    try:
        server.wait_ready(lambda: port_open(port), timeout_s=30)
        yield RedisServer(port=port, pid=server.pid or 0)
    finally:
        server.stop()


def _app_process(label: str, work: Path, *argv: str) -> Service:
    """``python -m services.bench.celery_app ARGV`` logging to ``work/label.log``."""
    command = [sys.executable, "-m", "services.bench.celery_app", *argv]
    return Service(name=label, argv=command, log_path=work / f"{label}.log")


@contextlib.contextmanager
def start_worker(setup: Setup, redis_url: str, work: Path) -> Iterator[Service]:
    """The prefork worker, once it says it is ready (Celery's ``worker_ready``)."""
    ready = work / f"worker-{setup.key}.ready"
    worker = _app_process(
        f"worker-{setup.key}",
        work,
        *("worker", "--setup", setup.key, "--redis", redis_url),
        *("--concurrency", str(concurrency()), "--ready", str(ready)),
    )
    worker.start()
    try:
        worker.wait_ready(ready.exists, timeout_s=60)
        yield worker
    finally:
        worker.stop(grace_s=30)


def _wait_for_results(
    count: Callable[[], int], tasks: int, processes: Iterable[Service], client_out: Path
) -> None:
    """Until the backend holds ``tasks`` results; fail at once if a process died."""
    deadline = time.monotonic() + 600 + tasks / 50
    while count() < tasks:
        for process in processes:
            gone = not process.running()
            if gone and (process.name.startswith("worker") or not client_out.exists()):
                raise CeleryBenchFailed(f"{process.name} exited early:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise CeleryBenchFailed(f"timed out: {count():,} of {tasks:,} results arrived")
        time.sleep(0.2)


def read_results(client: Any, *, batch: int = BATCH) -> list[tuple[str, float]]:
    """Every result in the backend's database, read with SCAN and MGET."""
    keys = list(client.scan_iter(match="celery-task-meta-*", count=batch))
    found = []
    for start in range(0, len(keys), batch):
        found += [result_of(raw) for raw in client.mget(keys[start : start + batch]) if raw]
    return found


def run_setup(setup: Setup, *, tasks: int, work: Path, say: Say) -> Report:
    """One setup on a Redis of its own: submit, wait for every result, read the figures."""
    say(f"celery ({setup.key}) {setup.title}: {tasks:,} tasks")
    # Other work on the machine skews every figure: the load when this setup began.
    load = round(os.getloadavg()[0], 2)
    out = work / f"client-{setup.key}.json"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(start_redis(setup, work))
        backend = redis.Redis(host="127.0.0.1", port=server.port, db=RESULT_DB)
        stack.callback(backend.close)
        worker = stack.enter_context(start_worker(setup, server.url, work))
        pids = {"worker": worker.pid or 0, "redis": server.pid}
        before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        client = _app_process(
            f"client-{setup.key}",
            work,
            *("submit", "--setup", setup.key, "--redis", server.url),
            *("--tasks", str(tasks), "--batch", str(BATCH), "--out", str(out)),
        )
        client.start()
        stack.callback(client.stop)
        _wait_for_results(backend.dbsize, tasks, (client, worker), out)
        cpu = {name: tree_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        results = read_results(backend)
        _until_exited(client, out)
    summary: dict[str, Any] = json.loads(out.read_text())
    return {
        "title": setup.title,
        "config": {**setup.celery_config(), "redis": shlex.join(setup.redis_config())},
        "load_average_1m": load,
        **figures(
            tasks=tasks, client=summary, results=results, cpu_s={**cpu, "client": summary["cpu_s"]}
        ),
    }


def _until_exited(client: Service, out: Path) -> None:
    deadline = time.monotonic() + 60
    while client.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not out.exists():
        raise CeleryBenchFailed(f"the client wrote no summary:\n{client.log_tail()}")


# -- the whole run ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    shown = subprocess.run(
        [redis_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout
    server = next((part[2:] for part in shown.split() if part.startswith("v=")), shown.strip())
    packages = {name: metadata.version(name) for name in ("celery", "kombu", "billiard")}
    return {
        "python": sys.version.split()[0],
        **packages,
        "redis-py": metadata.version("redis"),
        "redis-server": server,
    }


def run(*, tasks: int, say: Say, setups: Iterable[str] = ("a", "b")) -> Report:
    """Each setup in turn, alone; the logs are kept when one fails."""
    with _sigterm_interrupts():
        return _run(tasks=tasks, say=say, setups=setups)


def _run(*, tasks: int, say: Say, setups: Iterable[str]) -> Report:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="wsched-bench-celery-"))
    report: Report = {
        "machine": machine(),
        "versions": versions(),
        "workload": {
            "tasks": tasks,
            "batch": BATCH,
            "task_data_bytes": TASK_DATA_BYTES,
            "pool": "prefork",
            "concurrency": concurrency(),
        },
        "setups": {},
    }
    try:
        for key in setups:
            report["setups"][key] = run_setup(SETUPS[key], tasks=tasks, work=work, say=say)
    except BaseException:
        say(f"stopped; the logs are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - started)
    return report
