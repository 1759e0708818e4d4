"""A scheduler replica in-process (real Kafka and TiDB) and real agent and executor processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa

from services.infra.process import free_port
from services.scheduler.host import SchedulerHost
from services.settings import Settings
from services.store.schema import tasks
from tests.integration.scheduler import conftest as scheduler_fixtures
from tests.integration.scheduler.conftest import ReadyPipeline

# The scheduler tests' fixtures: a migrated database, a ready pipeline, task submission.
engine = scheduler_fixtures.engine
pipeline = scheduler_fixtures.pipeline
submit = scheduler_fixtures.submit

REPO = Path(__file__).resolve().parents[3]
TERMINAL = {"succeeded", "failed", "cancelled", "dead"}

Submit = Callable[[ReadyPipeline, Mapping[str, Mapping[str, object]]], Awaitable[None]]


@dataclass(kw_only=True)
class Proc:
    """A process this test started, with its log in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    async def exited(self, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            while (code := self.popen.poll()) is None:
                await asyncio.sleep(0.1)
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=15)


@dataclass(kw_only=True)
class Launcher:
    """Starts ``wsched executor`` and ``wsched worker`` processes; stops them all at the end."""

    root: Path
    socket_dir: Path
    scheduler_address: str
    procs: list[Proc] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def _start(self, name: str, module: str, args: list[str], env: Mapping[str, str]) -> Proc:
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        self._logs.append(log)
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc = Proc(name=name, popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    async def executor(self, name: str) -> str:
        """Start an executor on a Unix socket; its address once it listens."""
        path = self.socket_dir / f"{name}.sock"
        proc = self._start(
            f"executor-{name}",
            "services.worker.executor",
            ["--listen", f"unix://{path}"],
            {"WSCHED_WORKER_EXECUTOR_GRACE_S": "0"},
        )
        async with asyncio.timeout(30):
            while not path.exists():
                assert proc.popen.poll() is None, proc.log()
                await asyncio.sleep(0.1)
        return f"unix://{path}"

    def agent(
        self,
        *,
        name: str,
        pipeline: ReadyPipeline,
        definition: Mapping[str, object],
        executors: Mapping[str, str],
        **env: str,
    ) -> Proc:
        definition_path = self.root / f"{name}-pipeline.json"
        definition_path.write_text(json.dumps(definition))
        settings = {
            "WSCHED_WORKER_SCHEDULER": self.scheduler_address,
            "WSCHED_WORKER_PIPELINE_ID": pipeline.id,
            "WSCHED_WORKER_TOKEN": pipeline.token,
            "WSCHED_WORKER_NAME": name,
            "WSCHED_WORKER_DEFINITION": str(definition_path),
            "WSCHED_WORKER_EXECUTORS": ",".join(f"{k}={v}" for k, v in executors.items()),
            "WSCHED_WORKER_WORKDIR": str(self.root / "work"),
            "WSCHED_WORKER_POLL_WAIT_MS": "1000",
            "WSCHED_WORKER_LOG_LEVEL": "DEBUG",
        }
        return self._start(f"agent-{name}", "services.worker.agent", [], {**settings, **env})

    def agent_of_several(
        self,
        *,
        name: str,
        pipelines: list[tuple[ReadyPipeline, Mapping[str, object]]],
        executors: Mapping[str, str],
        **env: str,
    ) -> Proc:
        """One agent for several pipelines (``WSCHED_WORKER_PIPELINES``), each with its
        definition; the tokens in variables the file names."""
        listed, tokens = [], {}
        for number, (pipeline, definition) in enumerate(pipelines):
            definition_path = self.root / f"{name}-pipeline-{number}.json"
            definition_path.write_text(json.dumps(definition))
            tokens[f"TOKEN_{number}"] = pipeline.token
            listed.append(
                {
                    "id": pipeline.id,
                    "token_env": f"TOKEN_{number}",
                    "definition": definition_path.name,
                }
            )
        file = self.root / f"{name}-pipelines.json"
        file.write_text(json.dumps({"pipelines": listed}))
        settings = {
            "WSCHED_WORKER_SCHEDULER": self.scheduler_address,
            "WSCHED_WORKER_PIPELINES": str(file),
            "WSCHED_WORKER_NAME": name,
            "WSCHED_WORKER_EXECUTORS": ",".join(f"{k}={v}" for k, v in executors.items()),
            "WSCHED_WORKER_WORKDIR": str(self.root / "work"),
            "WSCHED_WORKER_POLL_WAIT_MS": "1000",
            "WSCHED_WORKER_LOG_LEVEL": "DEBUG",
        }
        return self._start(
            f"agent-{name}", "services.worker.agent", [], {**settings, **tokens, **env}
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.procs)

    def close(self) -> None:
        for proc in reversed(self.procs):  # agents before their executors
            proc.stop()
        for log in self._logs:
            log.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix sockets allow 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="wsw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str, tidb_url: str, kafka_group: str, engine: sa.Engine
) -> AsyncIterator[SchedulerHost]:
    async with SchedulerHost(
        settings=scheduler_settings(kafka_bootstrap, tidb_url, kafka_group), rescan_s=1
    ) as host:
        yield host


def scheduler_settings(
    kafka_bootstrap: str, tidb_url: str, kafka_group: str, **more: object
) -> Settings:
    """A scheduler replica's settings on free ports (``more``: further settings)."""
    port = free_port()
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=tidb_url,
        grpc_port=port,
        replica_name=f"replica-{port}",
        placement_group=kafka_group,
        metrics_port=0,
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture
async def launcher(
    scheduler: SchedulerHost, pipeline: ReadyPipeline, tmp_path: Path, short_dir: Path
) -> AsyncIterator[Launcher]:
    async with asyncio.timeout(30):
        while pipeline.id not in scheduler.hosted_pipelines():
            await asyncio.sleep(0.1)
    started = Launcher(
        root=tmp_path, socket_dir=short_dir, scheduler_address=f"127.0.0.1:{scheduler.grpc_port}"
    )
    try:
        yield started
    finally:
        started.close()


@dataclass(frozen=True, kw_only=True)
class TaskRow:
    status: str
    attempt: int
    worker: str | None
    error: str | None
    result: bytes | None


def task_rows(engine: sa.Engine, pipeline_id: str) -> dict[str, TaskRow]:
    query = sa.select(
        tasks.c.id,
        tasks.c.status,
        tasks.c.attempt,
        tasks.c.worker,
        tasks.c.error,
        tasks.c.result,
    ).where(tasks.c.pipeline_id == pipeline_id)
    with engine.connect() as conn:
        return {
            row.id: TaskRow(
                status=row.status,
                attempt=row.attempt,
                worker=row.worker,
                error=row.error,
                result=row.result,
            )
            for row in conn.execute(query)
        }


async def wait_finished(
    engine: sa.Engine,
    pipeline_id: str,
    task_ids: set[str],
    launcher: Launcher,
    timeout_s: float = 120,
) -> dict[str, TaskRow]:
    """The rows of ``task_ids`` once every one is in a final state (bounded wait)."""
    rows: dict[str, TaskRow] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                rows = task_rows(engine, pipeline_id)
                if task_ids <= {i for i, r in rows.items() if r.status in TERMINAL}:
                    return {i: rows[i] for i in task_ids}
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(
            f"tasks not finished in {timeout_s} s: {rows}\n{launcher.logs()}"
        ) from None


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


async def wait_lines(path: Path, count: int, timeout_s: float = 60) -> list[str]:
    async with asyncio.timeout(timeout_s):
        while len(lines := read_lines(path)) < count:
            await asyncio.sleep(0.1)
    return lines


async def wait_gone(pid: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while alive(pid):
            await asyncio.sleep(0.1)
