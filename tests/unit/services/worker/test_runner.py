"""One task through its steps, on fake executors."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.worker.command import (
    Command,
    CommandResult,
    ExecutorError,
    HandlerCall,
    HandlerResult,
)
from services.worker.definition import PipelineDefinition
from services.worker.runner import Outcome, TaskRunner, TaskSpec, limit_for, truncate_result

Script = Callable[[str, Command], CommandResult]


def is_dir(path: str) -> bool:
    return Path(path).is_dir()


@dataclass(kw_only=True)
class FakeExecutors:
    """Answers each command with ``script``; remembers what ran and whether its dir existed."""

    script: Script
    ran: list[tuple[str, Command]] = field(default_factory=list)
    dirs_existed: list[bool] = field(default_factory=list)
    calls: list[tuple[str, HandlerCall]] = field(default_factory=list)
    answer: HandlerResult = field(default_factory=lambda: HandlerResult(result=b'{"ok":true}'))

    async def run(self, executor: str, command: Command) -> CommandResult:
        self.ran.append((executor, command))
        self.dirs_existed.append(is_dir(command.work_dir))
        return self.script(executor, command)

    async def call(self, executor: str, call: HandlerCall) -> HandlerResult:
        self.calls.append((executor, call))
        return self.answer


def ok(stdout: bytes = b"") -> CommandResult:
    return CommandResult(exit_code=0, stdout=stdout, stdout_total_bytes=len(stdout))


def echo_script(executor: str, command: Command) -> CommandResult:
    return ok(f"{executor}:{command.text}".encode())


DEFINITION = PipelineDefinition.model_validate(
    {
        "pipeline": [
            {"executor": "fetch", "commands": ["get {{url}} /mnt/pipe/in"]},
            {"executor": "convert", "commands": ["convert /mnt/pipe/in", "cat /mnt/pipe/out"]},
        ]
    }
)


def runner_for(executors: FakeExecutors, tmp_path: Path, **kwargs: object) -> TaskRunner:
    return TaskRunner(
        definition=kwargs.pop("definition", DEFINITION),  # type: ignore[arg-type]
        executors=executors,
        work_root=tmp_path / "work",
        timeout_s=kwargs.pop("timeout_s", 60.0),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def task(data: object, task_id: str = "t1") -> TaskSpec:
    return TaskSpec(task_id=task_id, attempt=2, data=json.dumps(data).encode())


async def test_steps_run_in_order_and_the_result_is_the_last_stdout(tmp_path: Path) -> None:
    executors = FakeExecutors(script=echo_script)
    runner = runner_for(executors, tmp_path)
    outcome = await runner(task({"url": "http://x/a b"}))
    work_dir = executors.ran[0][1].work_dir
    assert [(e, c.text) for e, c in executors.ran] == [
        ("fetch", f"get 'http://x/a b' {work_dir}/in"),
        ("convert", f"convert {work_dir}/in"),
        ("convert", f"cat {work_dir}/out"),
    ]
    assert outcome.outcome is Outcome.SUCCEEDED
    assert outcome.result == f"convert:cat {work_dir}/out".encode()
    assert all(executors.dirs_existed) and Path(work_dir).parent == tmp_path / "work"
    assert os.listdir(work_dir) == []  # left empty: kept for the next task
    await runner.close()
    assert not is_dir(work_dir)
    env = executors.ran[0][1].env
    assert env == {"WSCHED_TASK_ID": "t1", "WSCHED_TASK_ATTEMPT": "2", "WSCHED_WORK_DIR": work_dir}


async def test_only_the_last_command_may_return_a_large_stdout(tmp_path: Path) -> None:
    executors = FakeExecutors(script=echo_script)
    await runner_for(executors, tmp_path, max_result_bytes=4096)(task({"url": "u"}))
    assert [c.max_stdout_bytes for _, c in executors.ran] == [200, 200, 4096]


@dataclass
class SlowExecutors(FakeExecutors):
    """Each command takes a moment: tasks gathered together are running at once."""

    async def run(self, executor: str, command: Command) -> CommandResult:
        await asyncio.sleep(0.01)
        return await super().run(executor, command)


async def test_tasks_running_at_once_get_work_dirs_of_their_own(tmp_path: Path) -> None:
    executors = SlowExecutors(script=echo_script)
    runner = runner_for(executors, tmp_path)
    await asyncio.gather(runner(task({"url": "a"}, "t1")), runner(task({"url": "b"}, "t2")))
    assert len({c.work_dir for _, c in executors.ran}) == 2
    await runner.close()
    assert list((tmp_path / "work").iterdir()) == []


async def test_the_first_failing_command_stops_the_task(tmp_path: Path) -> None:
    def script(executor: str, command: Command) -> CommandResult:
        if command.text.startswith("convert"):
            return CommandResult(exit_code=3, stderr_tail=b"line 1\nbad input format\n")
        return ok(b"fetched 10 bytes")

    executors = FakeExecutors(script=script)
    outcome = await runner_for(executors, tmp_path)(task({"url": "u"}))
    assert len(executors.ran) == 2  # `cat` never ran
    assert outcome.outcome is Outcome.FAILED
    assert outcome.error.startswith("step 2 (convert), command 1 exited with code 3\n")
    assert "bad input format" in outcome.error
    assert "step 1 (fetch), command 1: exit 0" in outcome.error  # per-step diagnostics
    assert "fetched 10 bytes" in outcome.error


async def test_a_killed_or_timed_out_command_says_so(tmp_path: Path) -> None:
    results = iter(
        [
            CommandResult(exit_code=137, killed=True, signal=9),
            CommandResult(exit_code=137, killed=True, signal=9, timed_out=True),
        ]
    )
    executors = FakeExecutors(script=lambda _e, _c: next(results))
    runner = runner_for(executors, tmp_path, timeout_s=7.0)
    killed = await runner(task({"url": "u"}))
    timed_out = await runner(task({"url": "u"}))
    assert "was killed by signal 9 (exit code 137) (no stderr)" in killed.error
    assert timed_out.error.startswith(
        "step 1 (fetch), command 1 timed out after 7 s (WSCHED_WORKER_TASK_TIMEOUT_S); "
        "its process group was killed"
    )
    assert timed_out.timed_out and not timed_out.non_retryable
    assert not killed.timed_out


async def test_each_command_gets_what_is_left_of_the_task_time(tmp_path: Path) -> None:
    now = [100.0]

    def script(executor: str, command: Command) -> CommandResult:
        now[0] += 4.0  # every command takes 4 s
        return ok()

    executors = FakeExecutors(script=script)
    runner = runner_for(executors, tmp_path, timeout_s=10.0, clock=lambda: now[0])
    outcome = await runner(task({"url": "u"}))
    assert [c.timeout_s for _, c in executors.ran] == [10.0, 6.0, 2.0]
    assert outcome.outcome is Outcome.SUCCEEDED
    now[0] = 100.0
    slow = runner_for(executors, tmp_path, timeout_s=7.0, clock=lambda: now[0])
    late = await slow(task({"url": "u"}))
    assert late.outcome is Outcome.FAILED and "step 2 (convert), command 2: timed out" in late.error
    assert late.timed_out


async def test_the_definition_timeout_wins_over_the_agent_default(tmp_path: Path) -> None:
    definition = DEFINITION.model_copy(update={"timeout_s": 5.0})
    executors = FakeExecutors(script=echo_script)
    await runner_for(executors, tmp_path, definition=definition, timeout_s=60.0)(task({"url": "u"}))
    assert executors.ran[0][1].timeout_s == pytest.approx(5.0, abs=0.5)


async def test_the_schedulers_timeout_wins_over_the_definition_and_the_agent(
    tmp_path: Path,
) -> None:
    definition = DEFINITION.model_copy(update={"timeout_s": 5.0})
    executors = FakeExecutors(
        script=lambda _e, _c: CommandResult(exit_code=137, killed=True, signal=9, timed_out=True)
    )
    runner = runner_for(executors, tmp_path, definition=definition, timeout_s=60.0)
    spec = TaskSpec(task_id="t1", attempt=1, data=b'{"url": "u"}', timeout_s=2.0)
    outcome = await runner(spec)
    assert executors.ran[0][1].timeout_s == pytest.approx(2.0, abs=0.5)
    assert "timed out after 2 s (the task's or its pipeline's execution_timeout)" in outcome.error
    assert outcome.timed_out


@pytest.mark.parametrize(
    ("sent", "definition_s", "agent_s", "expected"),
    [
        (3.0, 5.0, 60.0, (3.0, "execution_timeout")),
        (None, 5.0, 60.0, (5.0, "timeout_s")),
        (None, None, 60.0, (60.0, "WSCHED_WORKER_TASK_TIMEOUT_S")),
    ],
)
def test_timeout_precedence_task_or_pipeline_then_definition_then_agent(
    sent: float | None, definition_s: float | None, agent_s: float, expected: tuple[float, str]
) -> None:
    spec = TaskSpec(task_id="t", attempt=1, data=b"{}", timeout_s=sent)
    limit = limit_for(spec, definition_s=definition_s, agent_s=agent_s)
    assert limit.seconds == expected[0] and expected[1] in limit.source


async def test_a_missing_field_fails_before_anything_runs(tmp_path: Path) -> None:
    executors = FakeExecutors(script=echo_script)
    runner = runner_for(executors, tmp_path)
    missing = await runner(task({"href": "u"}))
    not_json = await runner(TaskSpec(task_id="t", attempt=1, data=b"{oops"))
    assert executors.ran == []
    assert missing.outcome is Outcome.FAILED
    assert missing.error == "step 1 (fetch) needs the field 'url', which the task data lacks"
    assert not_json.outcome is Outcome.FAILED and "Expecting property name" in not_json.error
    await runner.close()
    assert list((tmp_path / "work").iterdir()) == []


async def test_an_unreachable_executor_fails_the_task_naming_it(tmp_path: Path) -> None:
    def script(executor: str, command: Command) -> CommandResult:
        raise ExecutorError("executor 'fetch' at unix:///x.sock: UNAVAILABLE: connection refused")

    outcome = await runner_for(FakeExecutors(script=script), tmp_path)(task({"url": "u"}))
    assert outcome.outcome is Outcome.FAILED
    assert outcome.error.startswith("step 1 (fetch), command 1: executor 'fetch' at unix:///x.sock")


async def test_a_large_result_is_truncated_with_a_note(tmp_path: Path) -> None:
    big = b"x" * 5000
    executors = FakeExecutors(
        script=lambda _e, c: CommandResult(exit_code=0, stdout=big[:4096], stdout_total_bytes=5000)
    )
    outcome = await runner_for(executors, tmp_path, max_result_bytes=4096)(task({"url": "u"}))
    assert outcome.outcome is Outcome.SUCCEEDED
    assert len(outcome.result) <= 4096
    assert outcome.result.startswith(b"xxxx")
    assert outcome.result.endswith(b"[wsched: output truncated: 5000 bytes, the first 4035 kept]\n")


@pytest.mark.parametrize(
    ("stdout", "total", "limit", "expected"),
    [
        (b"abc", 3, 10, b"abc"),
        (b"", 0, 10, b""),
        (b"0123456789", 10, 10, b"0123456789"),
    ],
)
def test_whole_outputs_within_the_limit_stay_as_they_are(
    stdout: bytes, total: int, limit: int, expected: bytes
) -> None:
    assert truncate_result(stdout, total_bytes=total, limit=limit) == expected


@pytest.mark.parametrize(("size", "limit"), [(11, 10), (300_000, 262_144), (5, 4)])
def test_cut_outputs_fit_the_limit(size: int, limit: int) -> None:
    cut = truncate_result(b"y" * size, total_bytes=size, limit=limit)
    assert len(cut) <= limit
    head = cut.split(b"\n")[0]
    assert set(head) == {ord("y")}
    if limit > 100:
        assert (
            cut
            == head
            + f"\n[wsched: output truncated: {size} bytes, the first {len(head)} kept]\n".encode()
        )


@pytest.mark.parametrize(
    ("result", "final"),
    [
        (CommandResult(exit_code=64), True),  # listed: another attempt would fail the same way
        (CommandResult(exit_code=1), False),  # not listed: retried
        (CommandResult(exit_code=64, killed=True, signal=9), False),  # killed: not its own exit
        (CommandResult(exit_code=64, timed_out=True), False),  # a timeout may pass next time
    ],
)
async def test_listed_exit_codes_mark_a_failure_non_retryable(
    tmp_path: Path, result: CommandResult, final: bool
) -> None:
    definition = PipelineDefinition.model_validate(
        {"pipeline": [{"executor": "sh", "commands": ["check"]}], "non_retryable_exit_codes": [64]}
    )
    executors = FakeExecutors(script=lambda _e, _c: result)
    outcome = await runner_for(executors, tmp_path, definition=definition)(task({}))
    assert outcome.outcome is Outcome.FAILED and outcome.non_retryable is final


async def test_data_that_cannot_fill_the_commands_is_non_retryable(tmp_path: Path) -> None:
    executors = FakeExecutors(script=echo_script)
    outcome = await runner_for(executors, tmp_path)(task({"no_url": 1}))
    assert outcome.outcome is Outcome.FAILED and outcome.non_retryable
    assert executors.ran == []


# -- handler steps ---------------------------------------------------------------------------

HANDLERS = PipelineDefinition.model_validate(
    {
        "pipeline": [
            {"executor": "fetch", "commands": ["get {{url}} /mnt/pipe/in"]},
            {"executor": "py", "handler": "mypkg.tasks:resize", "pool": "thread"},
        ],
        "timeout_s": 30,
    }
)


async def test_a_handler_step_gets_the_data_and_its_return_value_is_the_result(
    tmp_path: Path,
) -> None:
    executors = FakeExecutors(script=echo_script)
    outcome = await runner_for(executors, tmp_path, definition=HANDLERS)(task({"url": "u"}))
    assert outcome.outcome is Outcome.SUCCEEDED and outcome.result == b'{"ok":true}'
    ((executor, call),) = executors.calls
    assert executor == "py" and call.handler == "mypkg.tasks:resize" and call.pool == "thread"
    assert json.loads(call.data) == {"url": "u"}
    assert call.timeout_s is not None and 0 < call.timeout_s <= 30
    assert call.env["WSCHED_TASK_ID"] == "t1"


@pytest.mark.parametrize(
    ("answer", "timed_out", "non_retryable", "says"),
    [
        (HandlerResult(timed_out=True), True, False, "timed out after 30 s"),
        (HandlerResult(error="Traceback ... ValueError: no"), False, False, "ValueError: no"),
        (HandlerResult(error="not JSON", non_retryable=True), False, True, "not JSON"),
    ],
)
async def test_a_handler_failure_is_reported_with_its_kind(
    tmp_path: Path, answer: HandlerResult, timed_out: bool, non_retryable: bool, says: str
) -> None:
    executors = FakeExecutors(script=echo_script, answer=answer)
    outcome = await runner_for(executors, tmp_path, definition=HANDLERS)(task({"url": "u"}))
    assert outcome.outcome is Outcome.FAILED
    assert (outcome.timed_out, outcome.non_retryable) == (timed_out, non_retryable)
    assert (
        outcome.error.startswith("step 2 (py), handler mypkg.tasks:resize")
        and says in outcome.error
    )


async def test_a_schedules_run_tells_its_steps_the_nominal_fire_time(tmp_path: Path) -> None:
    executors = FakeExecutors(script=echo_script)
    spec = TaskSpec(task_id="s@t", attempt=1, data=b'{"url": "u"}', fire_at="2026-11-26T12:00:00Z")
    await runner_for(executors, tmp_path)(spec)
    assert executors.ran[0][1].env["WSCHED_FIRE_AT"] == "2026-11-26T12:00:00Z"


async def test_an_emptied_work_dir_is_reused_and_one_left_with_files_is_removed(
    tmp_path: Path,
) -> None:
    executors = FakeExecutors(script=echo_script)
    runner = runner_for(executors, tmp_path)
    await runner(task({"url": "a"}, "t1"))
    first = Path(executors.ran[-1][1].work_dir)
    await runner(task({"url": "b"}, "t2"))
    assert Path(executors.ran[-1][1].work_dir) == first  # empty: handed to the next task

    # A task that leaves a file behind: its directory is removed, never handed on.
    def leave_a_file(executor: str, command: Command) -> CommandResult:
        (Path(command.work_dir) / "out").write_text("x")
        return echo_script(executor, command)

    leaving = FakeExecutors(script=leave_a_file)
    runner = runner_for(leaving, tmp_path)
    await runner(task({"url": "c"}, "t3"))
    await runner(task({"url": "d"}, "t4"))
    left, then = Path(leaving.ran[0][1].work_dir), Path(leaving.ran[3][1].work_dir)
    assert left != then
    assert not is_dir(str(left))
