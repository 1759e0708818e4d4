"""Settings of ``wsched worker`` (``WSCHED_WORKER_*``) and ``wsched executor``
(``WSCHED_WORKER_EXECUTOR_*``): one object per process, validated at start."""

from __future__ import annotations

import re
import socket
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The scheduler refuses larger results (``Limits.max_result_bytes`` of its worker API).
MAX_RESULT_BYTES = 256 * 1024
#: The work directory is substituted into commands, so it must need no shell quoting.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")


class AgentSettings(BaseSettings):
    """What a worker agent is configured with, whichever pipelines it serves."""

    # Empty counts as unset: a compose file's `${ECHO_WORKER_TOKEN:-}` left unset is then
    # "missing", naming the variable, not an empty token the scheduler refuses later.
    model_config = SettingsConfigDict(
        env_prefix="WSCHED_WORKER_", extra="ignore", env_ignore_empty=True
    )

    #: Scheduler replicas' gRPC addresses, comma-separated; any one will redirect to the
    #: replica serving the pipeline.
    scheduler: str = "127.0.0.1:50051"
    #: A stable name for this worker (the pod name), shown in the task's status.
    name: str = Field(default_factory=socket.gethostname)
    #: ``name=address`` pairs, comma-separated; an address is ``host:port`` or
    #: ``unix:///path.sock``. Every executor the definition names must be here.
    executors: str
    #: Tasks run at once.
    concurrency: int = Field(default=4, ge=1, le=1000)
    #: Each task gets a fresh directory under this one (``/mnt/pipe`` in a pod).
    workdir: Path = Path(tempfile.gettempdir()) / "wsched-work"
    #: A task running longer fails, unless the scheduler sent an execution timeout (the
    #: task's or its pipeline's) or the definition has a ``timeout_s``: those come first.
    task_timeout_s: float = Field(default=3600.0, gt=0)
    #: After SIGTERM: how long running tasks may go on to finish and be reported.
    grace_s: float = Field(default=30.0, ge=0)
    #: How long one poll waits for tasks (the scheduler caps it at 30 s).
    poll_wait_ms: int = Field(default=10_000, ge=100, le=30_000)
    poll_max_bytes: int = Field(default=1024 * 1024, ge=1)
    #: While tasks keep coming, a poll waits up to this long for a quarter of the slots
    #: to be free, so that polls carry several tasks each (0: poll at every free slot).
    poll_linger_ms: int = Field(default=5, ge=0, le=1000)
    #: Results finished within this time of each other go in one report.
    report_linger_ms: int = Field(default=20, ge=0)
    report_batch: int = Field(default=100, ge=1, le=1000)
    max_result_bytes: int = Field(default=MAX_RESULT_BYTES, ge=1024, le=MAX_RESULT_BYTES)
    #: At start, how long to wait for every executor to accept connections.
    executor_wait_s: float = Field(default=60.0, ge=0)
    log_level: str = "INFO"
    #: ``text`` or ``json`` (one object a line with the task, pipeline and trace ids).
    log_format: Literal["text", "json"] = "text"
    #: Where the agent's spans go (OTLP/gRPC, ``http://collector:4317``); unset: none.
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")

    @field_validator("workdir")
    @classmethod
    def _shell_safe(cls, value: Path) -> Path:
        if not _SAFE_PATH.match(str(value)):
            raise ValueError(
                f"{value} must consist of letters, digits and ._/- only: it is substituted "
                "for /mnt/pipe in commands"
            )
        return value

    def scheduler_addresses(self) -> list[str]:
        addresses = [part.strip() for part in self.scheduler.split(",") if part.strip()]
        if not addresses:
            raise ValueError("WSCHED_WORKER_SCHEDULER names no scheduler address")
        return addresses

    def executor_addresses(self) -> dict[str, str]:
        """``{"echo": "unix:///tmp/x/echo.sock", ...}`` from ``WSCHED_WORKER_EXECUTORS``."""
        return parse_executors(self.executors)


class WorkerSettings(AgentSettings):
    """An agent of one pipeline: what the pipeline charts set in the agent container."""

    pipeline_id: str
    token: SecretStr
    #: The pipeline definition, a JSON or YAML file.
    definition: Path


class PipelinesWorkerSettings(AgentSettings):
    """An agent of several pipelines (``WSCHED_WORKER_PIPELINES``), as one Celery worker
    serves many task types: the pipelines share its slots and executors."""

    #: A JSON or YAML file listing the pipelines (see :mod:`services.worker.pipelines`).
    pipelines: Path


def parse_executors(text: str) -> dict[str, str]:
    addresses: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, address = part.partition("=")
        if not sep or not name.strip() or not address.strip():
            raise ValueError(
                f"WSCHED_WORKER_EXECUTORS: {part!r} is not name=address "
                "(e.g. echo=unix:///tmp/echo.sock,wget=127.0.0.1:7001)"
            )
        if name.strip() in addresses:
            raise ValueError(f"WSCHED_WORKER_EXECUTORS names {name.strip()!r} twice")
        addresses[name.strip()] = address.strip()
    return addresses


class ExecutorSettings(BaseSettings):
    """What ``wsched executor`` is configured with (one per executor container)."""

    model_config = SettingsConfigDict(env_prefix="WSCHED_WORKER_EXECUTOR_", extra="ignore")

    #: ``unix:///path.sock`` or ``host:port``. Anyone who can connect can run commands:
    #: keep it on loopback or in the pod's shared volume.
    listen: str | None = None
    max_stdout_bytes: int = Field(default=1024 * 1024, ge=1024, le=3 * 1024 * 1024)
    stderr_tail_bytes: int = Field(default=8 * 1024, ge=256, le=64 * 1024)
    #: After SIGTERM the executor serves on for this long, because the agent in the same
    #: pod may still need it to finish its tasks; SIGINT or a second SIGTERM stops it now.
    grace_s: float = Field(default=35.0, ge=0)
    #: Python handler calls at once, per pool (process and thread).
    handler_workers: int = Field(default=4, ge=1, le=256)
    #: The largest handler return value, as JSON (the scheduler's result limit).
    max_result_bytes: int = Field(default=MAX_RESULT_BYTES, ge=1024, le=MAX_RESULT_BYTES)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


def explain(err: ValidationError, *, prefix: str) -> str:
    """Validation errors as the environment variables a user sets."""
    return "; ".join(
        f"{prefix}{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}"
        for e in err.errors()
    )
