"""What the benchmark reads off the running processes: memory, CPU, metrics, the store."""

from __future__ import annotations

import datetime as dt
import math
import os
import resource
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from services.infra.process import rss_mb
from services.store.engine import make_engine
from services.store.schema import tasks


def settled_rss_mb(pid: int, *, seconds: float = 1.0) -> float:
    """The median of a few readings: one reading can catch a short-lived allocation."""
    readings = []
    for _ in range(5):
        readings.append(rss_mb(pid))
        time.sleep(seconds / 5)
    return sorted(readings)[2]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3 onwards), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and every live descendant, with what each one's
    exited and waited-for children used (a prefork pool's recycled children, a fork
    that rewrote an append-only file): the whole tree's work so far."""
    ticks = 0
    for member in (pid, *descendants(pid)):
        fields = _stat(member)
        if fields is not None:
            ticks += sum(int(field) for field in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> tuple[int, int | None]:
    """(files open, the soft limit on them) of the process of ``pid`` or, when it is a
    launcher script, of its busiest descendant (Kafka's JVM): what bounds the partitions
    a broker can hold."""
    best: tuple[int, int | None] = (0, None)
    for member in (pid, *descendants(pid)):
        try:
            count = len(os.listdir(f"/proc/{member}/fd"))
            limits = Path(f"/proc/{member}/limits").read_text().splitlines()
        except OSError:
            continue
        soft = next((line.split()[3] for line in limits if line.startswith("Max open files")), "")
        if count > best[0]:
            best = (count, int(soft) if soft.isdigit() else None)
    return best


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (``/proc/stat``:
    all but idle and I/O wait), whoever the process."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


class CpuUse:
    """CPU seconds each named process used inside the block; ``bench processes`` is the
    client and the workers, counted once they have been waited for (``RUSAGE_CHILDREN``).
    ``machine_busy_s``: the whole machine's, every process counted (is it saturated?)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid}
        self.seconds: dict[str, float] = {}
        self.machine_busy_s = 0.0

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> CpuUse:
        self._before = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._children_before = self._children()
        self._machine_before = machine_busy_seconds()
        self._started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        for name, pid in self._pids.items():
            self.seconds[name] = round(cpu_seconds(pid) - self._before[name], 1)
        self.seconds["bench processes"] = round(self._children() - self._children_before, 1)
        self.seconds["wall"] = round(time.monotonic() - self._started, 1)
        self.machine_busy_s = round(machine_busy_seconds() - self._machine_before, 1)


class PeakRss:
    """Samples a process's RSS every 100 ms in a thread; ``peak_mb`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_mb = max(self.peak_mb, rss_mb(self._pid))

    def __enter__(self) -> PeakRss:
        self.peak_mb = rss_mb(self._pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def scrape(metrics_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scheduler's samples by (name, sorted labels)."""
    text = httpx.get(metrics_url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


#: TiDB's own account of what SQL clients' transactions wrote (``scope="general"``; its
#: internal jobs, such as TTL and statistics, are ``internal``): key-value pairs (a row or
#: one index entry each), their bytes, and the transactions that wrote.
_TIDB_WRITES = {
    "kv": "tidb_tikvclient_txn_write_kv_num_sum",
    "bytes": "tidb_tikvclient_txn_write_size_bytes_sum",
    "txns": "tidb_tikvclient_txn_write_kv_num_count",
}


def tidb_writes(status_url: str) -> dict[str, float]:
    """What TiDB has written so far for SQL clients, from its status port's metrics."""
    samples = scrape(status_url)
    return {
        key: samples.get((name, (("scope", "general"),)), 0.0) for key, name in _TIDB_WRITES.items()
    }


def writes_per_task(
    before: dict[str, float], after: dict[str, float], tasks: int
) -> dict[str, float]:
    """Everything TiDB wrote between two readings, per task of the phase (the API's and
    the grains' writes alike: counters, offsets and quota buckets included)."""
    if tasks <= 0:
        return {}
    return {
        "kv_writes_per_task": round((after["kv"] - before["kv"]) / tasks, 2),
        "bytes_written_per_task": round((after["bytes"] - before["bytes"]) / tasks, 1),
        "transactions_per_1000_tasks": round((after["txns"] - before["txns"]) * 1000 / tasks, 2),
    }


def pipeline_gauge(metrics_url: str, name: str, pipeline_id: str) -> float:
    return scrape(metrics_url).get((name, (("pipeline", pipeline_id),)), 0.0)


def dispatch_buckets(metrics_url: str) -> dict[float, float]:
    samples = scrape(metrics_url)
    return {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "wsched_dispatch_seconds_bucket"
    }


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The ``q`` quantile of the observations between two scrapes of a histogram.

    Linear inside the bucket the rank falls in, as PromQL's ``histogram_quantile``; a rank
    in the ``+Inf`` bucket answers the largest finite bound.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return 0.0
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def last_finished_unix(database_url: str, pipeline_id: str) -> tuple[int, float]:
    """(tasks succeeded, the last one's ``finished_at``) as the store holds them."""
    query = sa.select(sa.func.count(), sa.func.max(tasks.c.finished_at)).where(
        tasks.c.pipeline_id == pipeline_id, tasks.c.status == "succeeded"
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            count, last = conn.execute(query).one()
    finally:
        engine.dispose()
    return int(count), last.replace(tzinfo=dt.UTC).timestamp()
