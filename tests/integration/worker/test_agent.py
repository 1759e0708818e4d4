"""Real agents and executors as processes against a real scheduler (Kafka and TiDB)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.kafka.producer import KafkaProducer
from services.placement import Route
from services.scheduler.host import SchedulerHost
from services.store.schema import task_attempts
from tests.integration.scheduler.conftest import ReadyPipeline, create_ready_pipeline
from tests.integration.worker.conftest import (
    Launcher,
    Submit,
    alive,
    read_lines,
    task_rows,
    wait_finished,
    wait_gone,
    wait_lines,
)

pytestmark = pytest.mark.integration

ECHO = {"pipeline": [{"executor": "echo", "commands": ["echo {{message}}"]}]}
#: Writes its shell's pid to the task's ``pidfile``, then hangs (attempt 1 only).
HANG_ON_FIRST_ATTEMPT = {
    "pipeline": [
        {
            "executor": "sh",
            "commands": [
                "echo $$ >> {{pidfile}}; "
                'if [ "$WSCHED_TASK_ATTEMPT" = 1 ]; then exec sleep 600; fi; '
                "echo {{message}}"
            ],
        }
    ]
}
HANG = {"pipeline": [{"executor": "sh", "commands": ["echo $$ > {{pidfile}}; exec sleep 600"]}]}


async def test_a_batch_of_tasks_completes_with_their_results(
    launcher: Launcher, pipeline: ReadyPipeline, submit: Submit, engine: sa.Engine
) -> None:
    echo = await launcher.executor("echo")
    launcher.agent(
        name="w1",
        pipeline=pipeline,
        definition=ECHO,
        executors={"echo": echo},
        WSCHED_WORKER_CONCURRENCY="4",
    )
    items = {f"task-{i:02d}": {"message": f"hello {i}"} for i in range(30)}
    await submit(pipeline, items)
    rows = await wait_finished(engine, pipeline.id, set(items), launcher)
    assert {task_id: row.status for task_id, row in rows.items()} == dict.fromkeys(
        items, "succeeded"
    ), launcher.logs()
    assert {task_id: row.result for task_id, row in rows.items()} == {
        task_id: f"{data['message']}\n".encode() for task_id, data in items.items()
    }
    assert {(row.attempt, row.worker) for row in rows.values()} == {(1, "w1")}
    assert _files_left(launcher.root / "work") == []  # every work dir emptied


async def test_injection_attempts_never_run_and_come_back_verbatim(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
) -> None:
    pwned = short_dir / "pwned"
    attempts = [
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        f"; touch {pwned}",
        f"x && touch {pwned}",
        f"x | touch {pwned}",
        f"x\ntouch {pwned}",
        f"'; touch {pwned}; echo '",
        f'"; touch {pwned}; echo "',
        f"> {pwned}",
        f"$(touch {pwned})`touch {pwned}`'\"; touch {pwned}",
    ]
    items = {f"inject-{i}": {"message": text} for i, text in enumerate(attempts)}
    echo = await launcher.executor("echo")
    launcher.agent(name="w1", pipeline=pipeline, definition=ECHO, executors={"echo": echo})
    await submit(pipeline, items)
    rows = await wait_finished(engine, pipeline.id, set(items), launcher)
    assert not pwned.exists()
    assert {task_id: row.result for task_id, row in rows.items()} == {
        task_id: f"{data['message']}\n".encode() for task_id, data in items.items()
    }, launcher.logs()


async def test_failures_carry_the_exit_code_and_stderr_and_steps_share_the_work_dir(
    launcher: Launcher, pipeline: ReadyPipeline, submit: Submit, engine: sa.Engine
) -> None:
    definition = {
        "pipeline": [
            {"executor": "writer", "commands": ["echo {{message}} > /mnt/pipe/message.txt"]},
            {
                "executor": "reader",
                "commands": [
                    "test {{code}} -eq 0 || { echo failing on purpose with {{code}} >&2; "
                    "exit {{code}}; }",
                    "cat /mnt/pipe/message.txt",
                ],
            },
        ],
        "non_retryable_exit_codes": [3],
    }
    executors = {"writer": await launcher.executor("writer")}
    executors["reader"] = await launcher.executor("reader")
    launcher.agent(name="w1", pipeline=pipeline, definition=definition, executors=executors)
    await submit(
        pipeline,
        {
            "ok": {"message": "through the shared dir", "code": 0},
            "bad": {"message": "never read", "code": 3},
            "missing": {"message": "no code"},
            "flaky": {"message": "retried", "code": 4},
        },
    )
    rows = await wait_finished(engine, pipeline.id, {"ok", "bad", "missing", "flaky"}, launcher)
    assert (rows["ok"].status, rows["ok"].result) == ("succeeded", b"through the shared dir\n")
    # 3 is listed as non-retryable: failed at once, on its first attempt
    assert rows["bad"].status == "failed" and rows["bad"].error is not None
    assert rows["bad"].error.startswith("step 2 (reader), command 1 exited with code 3\n")
    assert "failing on purpose with 3" in rows["bad"].error
    assert "step 1 (writer), command 1: exit 0" in rows["bad"].error
    # data that cannot fill the commands would fail every attempt the same way
    assert rows["missing"].status == "failed"
    assert rows["missing"].error == (
        "step 2 (reader) needs the field 'code', which the task data lacks"
    )
    # any other failure is retried after the backoff, and dead after the last attempt
    assert rows["flaky"].status == "dead" and rows["flaky"].error is not None
    assert rows["flaky"].error.startswith(
        "attempt 3 of 3: step 2 (reader), command 1 exited with code 4\n"
    )
    with engine.connect() as conn:
        history = conn.execute(
            sa.select(task_attempts.c.attempt, task_attempts.c.outcome, task_attempts.c.error)
            .where(task_attempts.c.pipeline_id == pipeline.id, task_attempts.c.task_id == "flaky")
            .order_by(task_attempts.c.attempt)
        ).all()
    assert [(n, outcome) for n, outcome, _ in history] == [(1, "failed"), (2, "failed")]
    assert all("exited with code 4" in (error or "") for _, _, error in history)
    assert _files_left(launcher.root / "work") == []


async def test_a_hanging_command_fails_by_timeout(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
) -> None:
    pidfile = short_dir / "hang.pid"
    sh = await launcher.executor("sh")
    launcher.agent(
        name="w1",
        pipeline=pipeline,
        definition=HANG,
        executors={"sh": sh},
        WSCHED_WORKER_TASK_TIMEOUT_S="2",
    )
    await submit(pipeline, {"hang": {"pidfile": str(pidfile)}})
    (pid,) = [int(line) for line in await wait_lines(pidfile, 1)]
    rows = await wait_finished(engine, pipeline.id, {"hang"}, launcher)
    # a timeout is a failure like any other: retried, then dead after the last attempt
    assert rows["hang"].status == "dead" and rows["hang"].error is not None
    assert rows["hang"].error.startswith(
        "attempt 3 of 3: step 1 (sh), command 1 timed out after 2 s (WSCHED_WORKER_TASK_TIMEOUT_S)"
    )
    assert not alive(pid)


async def test_cancelling_a_running_task_kills_its_command(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
    kafka_bootstrap: str,
) -> None:
    pidfile = short_dir / "victim.pid"
    sh = await launcher.executor("sh")
    launcher.agent(name="w1", pipeline=pipeline, definition=HANG, executors={"sh": sh})
    await submit(pipeline, {"victim": {"pidfile": str(pidfile)}})
    (pid,) = [int(line) for line in await wait_lines(pidfile, 1)]
    assert alive(pid)
    async with KafkaProducer(bootstrap=kafka_bootstrap) as producer:
        await producer.cancel(Route(pipeline.id), "victim", reason="test")
    # a heartbeat every 5/3 s brings the verdict; the bound only keeps a failure short
    await wait_gone(pid, timeout_s=30)
    rows = await wait_finished(engine, pipeline.id, {"victim"}, launcher)
    assert rows["victim"].status == "cancelled", launcher.logs()
    assert rows["victim"].error == "cancelled while running"


async def test_a_task_of_a_killed_worker_runs_again_and_succeeds(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
) -> None:
    pidfile = short_dir / "attempts.pid"
    sh = await launcher.executor("sh")
    first = launcher.agent(
        name="w1", pipeline=pipeline, definition=HANG_ON_FIRST_ATTEMPT, executors={"sh": sh}
    )
    await submit(pipeline, {"t": {"pidfile": str(pidfile), "message": "second time lucky"}})
    (pid,) = [int(line) for line in await wait_lines(pidfile, 1)]
    first.signal(signal.SIGKILL)
    assert await first.exited(10) == -signal.SIGKILL
    await wait_gone(pid, timeout_s=30)  # the executor saw the call drop and killed it
    launcher.agent(
        name="w2", pipeline=pipeline, definition=HANG_ON_FIRST_ATTEMPT, executors={"sh": sh}
    )
    rows = await wait_finished(engine, pipeline.id, {"t"}, launcher)
    assert rows["t"].status == "succeeded", launcher.logs()
    assert (rows["t"].attempt, rows["t"].worker) == (2, "w2")
    assert rows["t"].result == b"second time lucky\n"
    assert len(read_lines(pidfile)) == 2


async def test_sigterm_finishes_and_reports_running_tasks_so_none_is_lost(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
) -> None:
    started = short_dir / "started"
    definition = {
        "pipeline": [
            {
                "executor": "sh",
                "commands": ["echo {{n}} >> {{log}}; sleep 1", "echo {{n}}"],
            }
        ]
    }
    sh = await launcher.executor("sh")
    first = launcher.agent(
        name="w1",
        pipeline=pipeline,
        definition=definition,
        executors={"sh": sh},
        WSCHED_WORKER_CONCURRENCY="3",
    )
    items = {f"t{n:02d}": {"n": n, "log": str(started)} for n in range(12)}
    await submit(pipeline, items)
    await wait_lines(started, 4)  # some finished, some running
    first.signal(signal.SIGTERM)
    assert await first.exited(30) == 0, first.log()
    by_first = {f"t{int(n):02d}" for n in read_lines(started)}
    rows_now = {i: r for i, r in task_rows(engine, pipeline.id).items() if i in by_first}
    # every task the first worker started was finished and reported by it
    assert {(r.status, r.worker) for r in rows_now.values()} == {("succeeded", "w1")}
    assert len(rows_now) == len(by_first) < len(items)
    launcher.agent(name="w2", pipeline=pipeline, definition=definition, executors={"sh": sh})
    rows = await wait_finished(engine, pipeline.id, set(items), launcher)
    assert {task_id: (row.status, row.result) for task_id, row in rows.items()} == {
        task_id: ("succeeded", f"{data['n']}\n".encode()) for task_id, data in items.items()
    }


async def test_sigterm_abandons_tasks_unfinished_after_the_grace(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    submit: Submit,
    engine: sa.Engine,
    short_dir: Path,
) -> None:
    pidfile = short_dir / "attempts.pid"
    sh = await launcher.executor("sh")
    first = launcher.agent(
        name="w1",
        pipeline=pipeline,
        definition=HANG_ON_FIRST_ATTEMPT,
        executors={"sh": sh},
        WSCHED_WORKER_GRACE_S="1",
    )
    await submit(pipeline, {"t": {"pidfile": str(pidfile), "message": "after the grace"}})
    (pid,) = [int(line) for line in await wait_lines(pidfile, 1)]
    first.signal(signal.SIGTERM)
    assert await first.exited(30) == 0, first.log()
    assert "abandoning 1 unfinished task(s) (t)" in first.log()
    await wait_gone(pid, timeout_s=10)
    launcher.agent(
        name="w2", pipeline=pipeline, definition=HANG_ON_FIRST_ATTEMPT, executors={"sh": sh}
    )
    rows = await wait_finished(engine, pipeline.id, {"t"}, launcher)
    assert (rows["t"].status, rows["t"].attempt, rows["t"].result) == (
        "succeeded",
        2,
        b"after the grace\n",
    ), launcher.logs()


async def test_one_agent_serves_several_pipelines_on_shared_slots(
    launcher: Launcher,
    pipeline: ReadyPipeline,
    scheduler: SchedulerHost,
    submit: Submit,
    engine: sa.Engine,
    kafka_bootstrap: str,
) -> None:
    """One ``wsched worker`` process for two pipelines (as one Celery worker serves many
    task types): each pipeline's tasks run with its own definition and are reported to
    it, both on the agent's two slots."""
    other = await create_ready_pipeline(engine, kafka_bootstrap)
    async with asyncio.timeout(30):
        while other.id not in scheduler.hosted_pipelines():
            await asyncio.sleep(0.1)
    echo = await launcher.executor("echo")
    shout = {"pipeline": [{"executor": "echo", "commands": ["echo {{message}}!"]}]}
    launcher.agent_of_several(
        name="both",
        pipelines=[(pipeline, ECHO), (other, shout)],
        executors={"echo": echo},
        WSCHED_WORKER_CONCURRENCY="2",
    )
    first = {f"a-{i:02d}": {"message": f"first {i}"} for i in range(20)}
    second = {f"b-{i:02d}": {"message": f"second {i}"} for i in range(20)}
    await submit(pipeline, first)
    await submit(other, second)
    for ready, items, suffix in ((pipeline, first, ""), (other, second, "!")):
        rows = await wait_finished(engine, ready.id, set(items), launcher)
        assert {
            task_id: (row.status, row.worker) for task_id, row in rows.items()
        } == dict.fromkeys(items, ("succeeded", "both")), launcher.logs()
        assert {task_id: row.result for task_id, row in rows.items()} == {
            task_id: f"{data['message']}{suffix}\n".encode() for task_id, data in items.items()
        }
    log = launcher.procs[-1].log()
    assert f"for pipeline(s) {pipeline.id}, {other.id}: 2 slot(s)" in log, log


def _files_left(work: Path) -> list[Path]:
    """What tasks left in the work root (emptied directories are kept for the next tasks,
    and removed when the agent stops)."""
    return [path for path in work.rglob("*") if not path.is_dir()]
