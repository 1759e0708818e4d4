"""Execution timeouts and Python handlers with real agent and executor processes against a
real scheduler (Kafka and TiDB): a step past its timeout has its process group killed, the
attempt is retried with the backoff, then the task is ``dead``; the task's own timeout
wins over its pipeline's, which wins over the definition's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.kafka.producer import KafkaProducer, OutgoingTask
from services.placement import Route
from services.store.schema import task_attempts
from tests.integration.scheduler.conftest import ReadyPipeline, create_ready_pipeline
from tests.integration.worker.conftest import (
    Launcher,
    Submit,
    alive,
    wait_finished,
    wait_gone,
    wait_lines,
)

pytestmark = pytest.mark.integration

#: Starts a background child (in the command's process group) and waits for it: only a
#: kill of the whole group ends the child.
HANG = {
    "pipeline": [
        {
            "executor": "sh",
            "commands": ["sleep 600 & echo $! >> {{pidfile}}; wait"],
        }
    ],
    "timeout_s": 300,  # the definition's: the pipeline's setting must win over it
}
HANDLERS = "tests.fixtures.handlers"


@pytest.fixture
async def pipeline(engine: sa.Engine, kafka_bootstrap: str) -> ReadyPipeline:
    """A pipeline with an execution timeout of 1.5 s, 2 attempts and a short backoff, in
    the row's insert: the scheduler may activate the grain at once, and it reads them then
    (an update after the insert lost that race once the grain's start got faster)."""
    backoff = {"initial_s": 0.5, "multiplier": 1.0, "max_s": 1.0, "jitter": 0.0}
    return await create_ready_pipeline(
        engine,
        kafka_bootstrap,
        execution_timeout_s=1.5,
        max_attempts=2,
        backoff_json=json.dumps(backoff),
    )


def history(engine: sa.Engine, pipeline_id: str, task_id: str) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(task_attempts.c.attempt, task_attempts.c.outcome, task_attempts.c.error)
            .where(task_attempts.c.pipeline_id == pipeline_id, task_attempts.c.task_id == task_id)
            .order_by(task_attempts.c.attempt)
        ).all()
    return [(row.attempt, row.outcome, row.error or "") for row in rows]


def outgoing(task_id: str, data: dict[str, object], *, timeout_s: float) -> OutgoingTask:
    raw = json.dumps(data).encode()
    return OutgoingTask(
        id=task_id,
        data=raw,
        data_sha256=hashlib.sha256(raw).digest(),
        execution_timeout_s=timeout_s,
    )


async def test_a_step_past_its_timeout_is_killed_retried_then_dead(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    engine: sa.Engine,
    short_dir: Path,
    kafka_bootstrap: str,
) -> None:
    sh = await launcher.executor("sh")
    launcher.agent(name="w1", pipeline=pipeline, definition=HANG, executors={"sh": sh})
    by_pipeline, by_task = short_dir / "pipeline.pids", short_dir / "task.pids"
    async with KafkaProducer(bootstrap=kafka_bootstrap) as producer:
        await producer.submit(
            Route(pipeline.id),
            [
                outgoing("own", {"pidfile": str(by_task)}, timeout_s=0.5),
                OutgoingTask(
                    id="inherits",
                    data=json.dumps({"pidfile": str(by_pipeline)}).encode(),
                    data_sha256=b"",
                ),
            ],
        )
    rows = await wait_finished(engine, pipeline.id, {"own", "inherits"}, launcher, timeout_s=90)
    for task_id, seconds in (("inherits", "1.5"), ("own", "0.5")):
        row = rows[task_id]
        assert (row.status, row.attempt) == ("dead", 2), launcher.logs()
        assert row.error is not None and row.error.startswith(
            f"attempt 2 of 2: step 1 (sh), command 1 timed out after {seconds} s "
            "(the task's or its pipeline's execution_timeout); its process group was killed"
        ), row.error
        ((attempt, outcome, error),) = history(engine, pipeline.id, task_id)
        assert (attempt, outcome) == (1, "timed_out") and f"after {seconds} s" in error
    # every attempt's background child went with its command's process group
    for pids in (by_pipeline, by_task):
        for pid in [int(line) for line in await wait_lines(pids, 2)]:
            await wait_gone(pid, timeout_s=10)
            assert not alive(pid)


async def test_python_handlers_run_in_the_executor_and_obey_the_timeout(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
) -> None:
    py = await launcher.executor("py")
    sh = await launcher.executor("sh")
    definition = {
        "pipeline": [
            {"executor": "sh", "commands": ["true"]},
            {"executor": "py", "handler": f"{HANDLERS}:dispatch"},
        ]
    }
    # ``dispatch`` calls the fixture handler each task's data names
    launcher.agent(
        name="w1",
        pipeline=pipeline,
        definition=definition,
        executors={"py": py, "sh": sh},
        WSCHED_WORKER_CONCURRENCY="4",
    )
    pidfile = short_dir / "handler-child.pid"
    await submit(
        pipeline,
        {
            "ok": {"call": "resize", "url": "https://example.com/a.png", "size": 64},
            "boom": {"call": "fail"},
            "slow": {"call": "sleep", "s": 600, "pidfile": str(pidfile)},
        },
    )
    rows = await wait_finished(engine, pipeline.id, {"ok", "boom", "slow"}, launcher, timeout_s=90)
    ok = rows["ok"]
    assert ok.status == "succeeded", launcher.logs()
    assert ok.result is not None
    result = json.loads(ok.result)
    assert result["url"] == "https://example.com/a.png" and result["size"] == 64
    processes = {proc.name: proc.pid for proc in launcher.procs}
    # in a pool process of the executor: neither the agent nor the executor's own process
    assert result["pid"] not in (processes["agent-w1"], processes["executor-py"])
    assert rows["boom"].status == "dead" and "ValueError: cannot handle" in (
        rows["boom"].error or ""
    )
    slow = rows["slow"]
    assert slow.status == "dead" and "timed out after 1.5 s" in (slow.error or ""), slow.error
    for pid in [int(line) for line in await wait_lines(pidfile, 2)]:
        await wait_gone(pid, timeout_s=10)
