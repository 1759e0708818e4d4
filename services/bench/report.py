"""The machine, the versions, and the table ``wsched bench`` prints."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.table import Table

from services.infra import kafka
from services.store.engine import make_engine

Report = dict[str, Any]


def machine() -> dict[str, Any]:
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    cpus = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {
        "cores": os.cpu_count(),
        "cpu": cpus[0] if cpus else platform.processor(),
        "memory_gb": round(int(meminfo["MemTotal"].split()[0]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        # Other work on the machine skews every figure: the load when the run began.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _java_version() -> str:
    java = shutil.which("java")
    if java is None:
        return "absent"
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    return (shown.stderr or shown.stdout).splitlines()[0]


def _tidb_release(shown: str) -> str:
    """``tidb_version()``'s release and commit (a build from Go modules has no release)."""
    lines = dict(line.split(":", 1) for line in shown.splitlines() if ":" in line)
    release = lines.get("Release Version", "").strip()
    commit = lines.get("Git Commit Hash", "").strip()
    return f"{release} (commit {commit})" if commit else release


def versions(tidb_root_url: str) -> dict[str, str]:
    engine = make_engine(tidb_root_url)
    try:
        with engine.connect() as conn:
            shown = str(conn.execute(sa.text("SELECT tidb_version()")).scalar_one())
    finally:
        engine.dispose()
    packages = (
        "workload-scheduler",
        "aiokafka",
        "grpcio",
        "protobuf",
        "sqlalchemy",
        "pymysql",
        "fastapi",
        "uvicorn",
        "httpx",
    )
    return {
        "python": platform.python_version(),
        "kafka": kafka.KAFKA_VERSION,
        "java": _java_version(),
        "tidb": _tidb_release(shown),
        **{name: metadata.version(name) for name in packages},
    }


FIGURES = (
    ("e2e_tasks_per_s", "end to end, tasks/s"),
    ("submit_p50_ms", "submit p50 per batch of 1,000, ms"),
    ("submit_p99_ms", "submit p99 per batch of 1,000, ms"),
    ("dispatch_p99_ms", "dispatch p99 at half the peak, ms"),
    ("single_submit_p99_ms", "single submits at 1,000/s (open loop): p99, ms"),
    ("batch_submit_p99_ms", "batches of 1,000 at 5/s (open loop): p99, ms"),
    ("scheduler_rss_mb", "scheduler peak RSS, MB"),
    ("memory_per_inflight_task_bytes", "scheduler memory per in-flight task, bytes"),
    ("backlog_rss_mb", "scheduler RSS with the backlog, MB"),
    ("floor_kafka_tasks_per_s", "floor: Kafka alone, tasks/s"),
    ("floor_tidb_tasks_per_s", "floor: TiDB alone, tasks/s"),
    ("floor_tasks_per_s", "floor, tasks/s"),
    ("fraction_of_floor", "end to end as a fraction of the floor"),
    ("duration_s", "benchmark duration, s"),
)


def render(report: Report) -> Table:
    table = Table("figure", "value", title="wsched bench")
    for key, label in FIGURES:
        value = report.get(key)
        table.add_row(label, "-" if value is None else f"{value:,}")
    for phase, figures in report["details"].items():
        for key, value in figures.items():
            table.add_row(f"{phase}: {key}", json.dumps(value))
    for section in ("machine", "versions", "workload"):
        for key, value in report[section].items():
            table.add_row(f"{section}: {key}", str(value))
    return table
