"""The agent's process (``wsched worker``): its settings, its executors, an
:class:`~services.worker.agent.Agent` per pipeline it serves on shared slots, and its
shutdown on a signal (see :mod:`services.worker.agent` for what an agent does)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from services import aio
from services.observability import Tracing, configure_logging, log_context, setup_tracing
from services.worker.agent import Agent, AgentOptions
from services.worker.client import SchedulerClient, WorkerRejected
from services.worker.command import ExecutorError
from services.worker.definition import DefinitionError, PipelineDefinition, load_definition
from services.worker.executor_client import ExecutorClients
from services.worker.pipelines import ServedPipeline, load_pipelines
from services.worker.runner import TaskRunner
from services.worker.settings import (
    AgentSettings,
    PipelinesWorkerSettings,
    WorkerSettings,
    explain,
)
from services.worker.slots import Slots
from services.worker.tracing import AttemptSpans, StepSpans

log = logging.getLogger("wsched.worker")


def check_executors(definition: PipelineDefinition, addresses: Mapping[str, str]) -> None:
    missing = sorted(definition.executors() - set(addresses))
    if missing:
        raise DefinitionError(
            f"the pipeline's executor(s) {', '.join(missing)} have no address in "
            f"WSCHED_WORKER_EXECUTORS (it names: {', '.join(sorted(addresses)) or 'none'}); "
            "add name=host:port or name=unix:///path.sock"
        )


async def _until_ready(executors: ExecutorClients, stopping: asyncio.Event) -> bool:
    """Wait for every executor (bounded); False if a signal came first."""
    ready = asyncio.create_task(executors.wait_ready())
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not ready.done():
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        return False
    ready.result()  # raises ExecutorError naming an executor that never came
    return True


async def serve(settings: AgentSettings, pipelines: Sequence[ServedPipeline]) -> int:
    """Run an agent per pipeline until a signal, sharing the slots and the executors; the
    process's exit code. If one pipeline's polling fails for good (a revoked token, say),
    every pipeline stops and the process exits 1, to be restarted whole."""
    stopping, now = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            now.set()
        stopping.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    executors = ExecutorClients(
        addresses=settings.executor_addresses(), connect_timeout_s=settings.executor_wait_s
    )
    clients = {
        pipeline.id: SchedulerClient(
            addresses=settings.scheduler_addresses(),
            pipeline_id=pipeline.id,
            token=pipeline.token,
            worker=settings.name,
        )
        for pipeline in pipelines
    }
    tracing = _tracing(settings)
    slots = Slots(settings.concurrency)
    runners: dict[str, TaskRunner] = {}
    try:
        if not await _until_ready(executors, stopping):
            return 0
        log.info(
            "worker %s for pipeline(s) %s: %d slot(s), scheduler %s",
            settings.name,
            ", ".join(pipeline.id for pipeline in pipelines),
            settings.concurrency,
            settings.scheduler,
        )
        runners.update(
            (
                pipeline.id,
                TaskRunner(
                    definition=pipeline.definition,
                    executors=executors,
                    work_root=settings.workdir,
                    timeout_s=settings.task_timeout_s,
                    max_result_bytes=settings.max_result_bytes,
                    steps=StepSpans(tracing=tracing) if tracing.enabled else None,
                ),
            )
            for pipeline in pipelines
        )
        agents = {
            pipeline.id: Agent(
                scheduler=clients[pipeline.id],
                runner=runners[pipeline.id],
                options=AgentOptions.of(settings),
                spans=_attempt_spans(settings, pipeline.id, tracing),
                slots=slots,
            )
            for pipeline in pipelines
        }
        ended = await asyncio.gather(
            *(_run_agent(pid, agent, stopping, now) for pid, agent in agents.items()),
            return_exceptions=True,
        )
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
    except (ExecutorError, WorkerRejected) as err:
        log.error("worker stopped: %s", err)
        return 1
    finally:
        for runner in runners.values():
            await runner.close()  # the work directories kept for reuse
        await executors.close()
        for client in clients.values():
            await client.close()
    log.info("worker stopped")
    return 0


async def _run_agent(
    pipeline_id: str, agent: Agent, stopping: asyncio.Event, now: asyncio.Event
) -> None:
    with log_context(pipeline_id=pipeline_id):
        try:
            await agent.run(stopping=stopping, now=now)
        except WorkerRejected:
            stopping.set()  # the others finish their tasks and stop too
            raise


def _attempt_spans(
    settings: AgentSettings, pipeline_id: str, tracing: Tracing
) -> AttemptSpans | None:
    if not tracing.enabled:
        return None
    return AttemptSpans(tracing=tracing, pipeline_id=pipeline_id, worker=settings.name)


def _tracing(settings: AgentSettings) -> Tracing:
    tracing = setup_tracing(service="wsched-worker", endpoint=settings.otlp_endpoint)
    if tracing.enabled:
        # Flushed at exit: the last attempts' spans would otherwise be lost with the process.
        atexit.register(tracing.shutdown)
    return tracing


def worker_main() -> None:
    """``wsched worker``: everything comes from ``WSCHED_WORKER_*`` (see WorkerSettings),
    or, with ``WSCHED_WORKER_PIPELINES``, the pipelines from that file (see
    :mod:`services.worker.pipelines`)."""
    try:
        settings, pipelines = _configured()
        for pipeline in pipelines:
            check_executors(pipeline.definition, settings.executor_addresses())
    except ValidationError as err:
        print(f"wsched worker: {explain(err, prefix='WSCHED_WORKER_')}", file=sys.stderr)
        raise SystemExit(2) from err
    except ValueError as err:  # DefinitionError, a malformed executor list
        print(f"wsched worker: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    raise SystemExit(aio.run(serve(settings, pipelines)))


def _configured() -> tuple[AgentSettings, list[ServedPipeline]]:
    if os.environ.get("WSCHED_WORKER_PIPELINES"):
        several = PipelinesWorkerSettings()  # type: ignore[call-arg]  # from the environment
        for single in ("PIPELINE_ID", "TOKEN", "DEFINITION"):
            if os.environ.get(f"WSCHED_WORKER_{single}"):
                raise ValueError(
                    f"WSCHED_WORKER_{single} is set with WSCHED_WORKER_PIPELINES: name the "
                    "pipelines in the file only"
                )
        return several, load_pipelines(several.pipelines)
    one = WorkerSettings()  # type: ignore[call-arg]  # required fields come from env
    served = ServedPipeline(
        id=one.pipeline_id,
        token=one.token.get_secret_value(),
        definition=load_definition(one.definition),
    )
    return one, [served]
