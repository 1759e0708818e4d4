"""One command (or Python handler call) for an executor and what became of it; the port
the agent runs them through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class Command:
    text: str  # shell text, run with /bin/sh -c
    work_dir: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    #: None: no timeout of the command's own.
    timeout_s: float | None = None
    #: 0: the executor's own limit.
    max_stdout_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    exit_code: int
    stdout: bytes = b""
    stdout_total_bytes: int = 0
    stderr_tail: bytes = b""
    timed_out: bool = False
    killed: bool = False
    signal: int = 0
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True, kw_only=True)
class HandlerCall:
    """A Python callable for the executor to call with the task's data (in-process steps)."""

    handler: str  # ``package.module:function``
    data: bytes  # the task's JSON, as submitted
    #: ``process`` (the default: killable at the timeout) or ``thread``.
    pool: str = "process"
    timeout_s: float | None = None
    #: The result (the return value as JSON) may be at most this long.
    max_result_bytes: int = 0
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HandlerResult:
    result: bytes = b""  # the return value as JSON
    #: Empty when the handler returned; else what went wrong (a traceback's tail).
    error: str = ""
    timed_out: bool = False
    #: Another call would fail the same way (cannot import it, result not JSON).
    non_retryable: bool = False
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return not self.error and not self.timed_out


class ExecutorError(Exception):
    """The executor could not run the command: not reachable, refused it, or failed mid-call."""


class Executors(Protocol):
    """Runs a command or calls a handler on the named executor; cancelling the call kills
    the command (or the handler's process)."""

    async def run(self, executor: str, command: Command) -> CommandResult: ...

    async def call(self, executor: str, call: HandlerCall) -> HandlerResult: ...
