"""The local deployer: a pipeline's workers as processes on this machine (``wsched dev``).

It reads the same chart a Kubernetes deployer installs — its values' ``pipeline:`` (the
definition) and ``executors`` — and runs what the pod would: one ``wsched executor`` per
executor on a Unix socket, and ``scaling.min_replicas`` (default 1) ``wsched worker``
agents. Everything of a pipeline lives in ``<data dir>/pipelines/<id>/``: the definition,
the sockets, the tasks' work directories, ``logs/`` and ``processes.json``.

The process that owns the deployer (the API) owns the processes: ``async with`` it, and
leaving stops them all. Entering stops whatever an earlier owner left running. A process
that dies is started again, after a pause that doubles up to a minute, as Kubernetes
restarts a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from services.deploy import processes
from services.deploy.charts import ChartError, WorkerSpec, chart_values, resolve_local_chart
from services.deploy.ports import DeployFailed, DeploymentStatus
from services.deploy.processes import AGENT, EXECUTOR, LocalProcess
from services.store.control import ControlError, Pipeline

log = logging.getLogger("wsched.deploy.local")

KIND = "local"
#: Unix socket paths are limited (``sockaddr_un``); longer ones go to a short temp dir.
_MAX_SOCKET_PATH = 100
#: The agent substitutes its work directory into commands, so it must need no quoting.
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9_./-]+$")
#: The longest pause before restarting a process that keeps dying.
_MAX_RESTART_PAUSE_S = 60.0


@dataclass(frozen=True, kw_only=True)
class LocalOptions:
    data_dir: Path
    #: The scheduler's gRPC address(es) the agents poll.
    scheduler: str
    #: Relative chart paths are resolved against this directory.
    base_dir: Path
    python: str = sys.executable
    log_level: str = "INFO"
    #: The workers' log format and trace endpoint: the API's own (``wsched dev``).
    log_format: str = "text"
    otlp_endpoint: str | None = None
    #: The agents' grace after SIGTERM, capped locally so that Ctrl-C is quick; tasks
    #: still running then are abandoned and run again once their leases expire.
    max_agent_grace_s: float = 5.0
    executor_ready_s: float = 30.0
    #: After starting the agents, how long to watch them for a start-up failure.
    settle_s: float = 1.0
    executor_stop_s: float = 5.0
    watch_interval_s: float = 2.0


@dataclass(kw_only=True)
class _Deployment:
    directory: Path
    socket_dir: Path
    fingerprint: str
    revision: int
    detail: str
    procs: list[LocalProcess] = field(default_factory=list)

    def all_alive(self) -> bool:
        return all(p.alive() for p in self.procs)


class LocalDeployer:
    """The :class:`~services.deploy.ports.Deployer` of ``WSCHED_DEPLOYER=local``."""

    kind = KIND

    def __init__(self, *, options: LocalOptions, token_of: Callable[[str], str]) -> None:
        """``token_of(pipeline_id)``: the pipeline's worker token (blocking; raises
        ControlError when there is none to have)."""
        self._options = options
        self._token_of = token_of
        self._root = options.data_dir.resolve() / "pipelines"
        self._deployments: dict[str, _Deployment] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> LocalDeployer:
        left = await asyncio.to_thread(
            processes.stop_recorded, self._root, executor_wait_s=self._options.executor_stop_s
        )
        if left:
            log.warning("stopped %d worker process(es) an earlier API left running", len(left))
        self._watcher = asyncio.create_task(self._watch(), name="wsched-local-deployer-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every process of every pipeline (agents first)."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        deployments = list(self._deployments.items())
        self._deployments.clear()
        await asyncio.gather(*(self._stop(d, forget=True) for _, d in deployments))
        if deployments:
            log.info("stopped the workers of %d pipeline(s)", len(deployments))

    def running_pids(self, pipeline_id: str) -> list[int]:
        deployment = self._deployments.get(pipeline_id)
        return [p.pid for p in deployment.procs if p.alive()] if deployment else []

    # -- the port ----------------------------------------------------------------------------

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        async with self._lock(pipeline.id):
            spec = await asyncio.to_thread(self._spec, pipeline)
            token = await self._token(pipeline.id)
            fingerprint = self._fingerprint(spec, token)
            current = self._deployments.get(pipeline.id)
            if current and current.fingerprint == fingerprint and current.all_alive():
                return self._status(current)
            if current is not None:
                log.info("pipeline %s: its workers changed; restarting them", pipeline.id)
                await self._stop(self._deployments.pop(pipeline.id), forget=True)
            else:  # an earlier API's processes, if any
                await asyncio.to_thread(self._stop_recorded, self._root / pipeline.id)
            revision = _revision(pipeline) + 1
            started = await self._start(pipeline, spec, token, fingerprint, revision)
            return self._status(started)

    async def in_place(self, pipeline: Pipeline) -> bool:
        """Processes live only as long as this deployer: after a restart none are in
        place. Those that die meanwhile are restarted by the watcher."""
        return pipeline.id in self._deployments

    async def remove(self, pipeline: Pipeline) -> None:
        async with self._lock(pipeline.id):
            directory = self._root / pipeline.id
            current = self._deployments.pop(pipeline.id, None)
            if current is not None:
                await self._stop(current, forget=True)
            else:
                await asyncio.to_thread(self._stop_recorded, directory)
            await asyncio.to_thread(_remove_dirs, directory)

    async def remove_tenant(self, namespace: str) -> None:
        """Local workers have no namespace: removing the pipelines removed everything."""
        return None

    # -- building the spec -------------------------------------------------------------------

    def _spec(self, pipeline: Pipeline) -> WorkerSpec:
        overrides: list[Mapping[str, Any]] = [pipeline.values]
        if pipeline.scaling:
            overrides.append({"scaling": dict(pipeline.scaling)})
        try:
            chart = resolve_local_chart(pipeline.chart, base_dir=self._options.base_dir)
            return WorkerSpec.from_values(chart_values(chart, *overrides))
        except ChartError as err:
            raise DeployFailed(str(err)) from err

    async def _token(self, pipeline_id: str) -> str:
        try:
            return await asyncio.to_thread(self._token_of, pipeline_id)
        except ControlError as err:
            raise DeployFailed(f"cannot start workers without the worker token: {err}") from err

    def _fingerprint(self, spec: WorkerSpec, token: str) -> str:
        document = {
            "spec": dataclasses.asdict(spec),
            "scheduler": self._options.scheduler,
            "token": hashlib.sha256(token.encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()

    def _status(self, deployment: _Deployment) -> DeploymentStatus:
        return DeploymentStatus(
            status="deployed",
            revision=deployment.revision,
            detail=deployment.detail,
            deployer=KIND,
        )

    # -- starting ----------------------------------------------------------------------------

    async def _start(
        self, pipeline: Pipeline, spec: WorkerSpec, token: str, fingerprint: str, revision: int
    ) -> _Deployment:
        directory = self._root / pipeline.id
        deployment = _Deployment(
            directory=directory,
            socket_dir=_socket_dir(directory, spec.executors),
            fingerprint=fingerprint,
            revision=revision,
            detail=(
                f"{spec.replicas} agent(s) and executor(s) {', '.join(spec.executors)} run as "
                f"local processes; logs in {directory / 'logs'}"
            ),
        )
        # Known before the first process starts, so that close() stops a half-made start.
        self._deployments[pipeline.id] = deployment
        try:
            await asyncio.to_thread(_prepare, deployment, spec)
            await self._start_executors(deployment, spec)
            await self._start_agents(deployment, pipeline, spec, token)
        except BaseException:
            # Forgotten only once stopped: if this is cancelled meanwhile, close() stops it.
            await asyncio.shield(self._stop(deployment, forget=True))
            self._deployments.pop(pipeline.id, None)
            raise
        log.info("pipeline %s: %s (revision %d)", pipeline.id, deployment.detail, revision)
        return deployment

    async def _start_executors(self, deployment: _Deployment, spec: WorkerSpec) -> None:
        for name in spec.executors:
            socket = deployment.socket_dir / f"{name}.sock"
            argv = [self._options.python, "-m", "services.cli", "executor"]
            self._spawn(
                deployment,
                role=EXECUTOR,
                name=f"executor-{name}",
                argv=[*argv, "--listen", f"unix://{socket}"],
                env={
                    # Stopped after the agents, so nothing needs it once signalled.
                    "WSCHED_WORKER_EXECUTOR_GRACE_S": "0",
                    "WSCHED_WORKER_EXECUTOR_LOG_LEVEL": self._options.log_level,
                    "WSCHED_WORKER_EXECUTOR_LOG_FORMAT": self._options.log_format,
                },
            )
        await self._wait_sockets(deployment, spec)

    async def _wait_sockets(self, deployment: _Deployment, spec: WorkerSpec) -> None:
        deadline = time.monotonic() + self._options.executor_ready_s
        waiting = {f"executor-{n}": deployment.socket_dir / f"{n}.sock" for n in spec.executors}
        while waiting:
            for proc in deployment.procs:
                if proc.name in waiting and not proc.alive():
                    raise DeployFailed(
                        f"{proc.name} exited while starting (exit {proc.exit_code()}):\n"
                        f"{proc.log_tail()}"
                    )
            waiting = {name: path for name, path in waiting.items() if not path.is_socket()}
            if waiting and time.monotonic() > deadline:
                raise DeployFailed(
                    f"{', '.join(waiting)} did not listen within "
                    f"{self._options.executor_ready_s:g} s; see {deployment.directory / 'logs'}"
                )
            await asyncio.sleep(0.05)

    async def _start_agents(
        self, deployment: _Deployment, pipeline: Pipeline, spec: WorkerSpec, token: str
    ) -> None:
        addresses = ",".join(
            f"{name}=unix://{deployment.socket_dir / f'{name}.sock'}" for name in spec.executors
        )
        work_root = _work_root(deployment.directory)
        for number in range(1, spec.replicas + 1):
            self._spawn(
                deployment,
                role=AGENT,
                name=f"agent-{number}",
                argv=[self._options.python, "-m", "services.cli", "worker"],
                env={
                    "WSCHED_WORKER_SCHEDULER": self._options.scheduler,
                    "WSCHED_WORKER_PIPELINE_ID": pipeline.id,
                    "WSCHED_WORKER_TOKEN": token,
                    "WSCHED_WORKER_NAME": f"{pipeline.name}-local-{number}",
                    "WSCHED_WORKER_DEFINITION": str(deployment.directory / "definition.json"),
                    "WSCHED_WORKER_EXECUTORS": addresses,
                    "WSCHED_WORKER_WORKDIR": str(work_root / f"agent-{number}"),
                    "WSCHED_WORKER_CONCURRENCY": str(spec.concurrency),
                    "WSCHED_WORKER_TASK_TIMEOUT_S": str(spec.task_timeout_s),
                    "WSCHED_WORKER_GRACE_S": str(self._agent_grace_s(spec)),
                    "WSCHED_WORKER_LOG_LEVEL": self._options.log_level,
                    "WSCHED_WORKER_LOG_FORMAT": self._options.log_format,
                    **(
                        {"WSCHED_WORKER_OTLP_ENDPOINT": self._options.otlp_endpoint}
                        if self._options.otlp_endpoint
                        else {}
                    ),
                },
            )
        await self._settle(deployment)

    def _agent_grace_s(self, spec: WorkerSpec) -> float:
        return min(spec.grace_s, self._options.max_agent_grace_s)

    async def _settle(self, deployment: _Deployment) -> None:
        """Fail the deploy if an agent exits at once (a bad setting, a refused token)."""
        deadline = time.monotonic() + self._options.settle_s
        while time.monotonic() < deadline:
            for proc in deployment.procs:
                if not proc.alive():
                    raise DeployFailed(
                        f"{proc.name} exited at start (exit {proc.exit_code()}):\n{proc.log_tail()}"
                    )
            await asyncio.sleep(0.1)

    def _spawn(
        self,
        deployment: _Deployment,
        *,
        role: str,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
    ) -> None:
        proc = processes.spawn(
            role=role,
            name=name,
            argv=argv,
            env={**_inherited_env(), **env},
            log_path=deployment.directory / "logs" / f"{name}.log",
        )
        deployment.procs.append(proc)
        processes.write_record(deployment.directory, deployment.procs)

    # -- stopping ----------------------------------------------------------------------------

    async def _stop(self, deployment: _Deployment, *, forget: bool) -> None:
        agent_wait_s = self._options.max_agent_grace_s + 5
        await asyncio.to_thread(
            processes.stop_processes,
            deployment.procs,
            agent_wait_s=agent_wait_s,
            executor_wait_s=self._options.executor_stop_s,
        )
        if forget:
            processes.clear_record(deployment.directory)
        # A short directory of sockets (and work) in the temp dir is made again at start.
        await asyncio.to_thread(_remove_short_dir, deployment.directory)

    def _stop_recorded(self, directory: Path) -> None:
        left = [p for p in processes.read_record(directory) if p.alive()]
        processes.stop_processes(
            left,
            agent_wait_s=self._options.max_agent_grace_s + 5,
            executor_wait_s=self._options.executor_stop_s,
        )
        processes.clear_record(directory)

    def _lock(self, pipeline_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline_id, asyncio.Lock())

    # -- restarting what died ----------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._options.watch_interval_s)
            for pipeline_id, deployment in list(self._deployments.items()):
                lock = self._lock(pipeline_id)
                if lock.locked():
                    continue  # being deployed or removed right now
                async with lock:
                    if self._deployments.get(pipeline_id) is not deployment:
                        continue
                    try:
                        self._restart_dead(pipeline_id, deployment)
                    except OSError:  # cannot fork, disk full ...: the next round retries
                        log.exception("pipeline %s: restarting its workers failed", pipeline_id)

    def _restart_dead(self, pipeline_id: str, deployment: _Deployment) -> None:
        now = time.monotonic()
        changed = False
        for index, proc in enumerate(deployment.procs):
            if proc.alive():
                continue
            if not proc.restart_after:
                pause = min(2.0**proc.restarts, _MAX_RESTART_PAUSE_S)
                proc.restart_after = now + pause
                log.warning(
                    "pipeline %s: %s exited (exit %s); restarting it in %.0f s. Its log:\n%s",
                    pipeline_id,
                    proc.name,
                    proc.exit_code(),
                    pause,
                    proc.log_tail(),
                )
            elif now >= proc.restart_after:
                deployment.procs[index] = processes.respawn(proc)
                changed = True
        if changed:
            processes.write_record(deployment.directory, deployment.procs)


def _revision(pipeline: Pipeline) -> int:
    value = pipeline.deployment.get("revision", 0)
    return value if isinstance(value, int) else 0


def _inherited_env() -> dict[str, str]:
    # The API's own WSCHED_* settings must never configure a worker: only those we set do.
    return {k: v for k, v in os.environ.items() if not k.startswith("WSCHED_")}


def _short_dir(directory: Path, what: str) -> Path:
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"wsched-{digest}" / what


def _socket_dir(directory: Path, executors: tuple[str, ...]) -> Path:
    """``directory`` if every socket path in it stays within the limit, else a short
    directory under the system's temp dir."""
    longest = max((len(str(directory / f"{name}.sock")) for name in executors), default=0)
    return directory if longest <= _MAX_SOCKET_PATH else _short_dir(directory, "sockets")


def _work_root(directory: Path) -> Path:
    work = directory / "work"
    return work if _SHELL_SAFE.match(str(work)) else _short_dir(directory, "work")


def _prepare(deployment: _Deployment, spec: WorkerSpec) -> None:
    """The pipeline's directory with the definition the agents read."""
    deployment.directory.mkdir(parents=True, exist_ok=True)
    deployment.socket_dir.mkdir(parents=True, exist_ok=True)
    (deployment.directory / "logs").mkdir(exist_ok=True)
    definition = deployment.directory / "definition.json"
    temp = definition.with_suffix(".tmp")
    temp.write_text(json.dumps(spec.definition, indent=2))
    temp.replace(definition)


def _remove_short_dir(directory: Path) -> None:
    shutil.rmtree(_short_dir(directory, "sockets").parent, ignore_errors=True)


def _remove_dirs(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    _remove_short_dir(directory)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # the pipelines/ dir, once its last pipeline is gone
