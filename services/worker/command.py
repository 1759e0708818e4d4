"""One command for an executor and what became of it; the port the agent runs them through."""

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


class ExecutorError(Exception):
    """The executor could not run the command: not reachable, refused it, or failed mid-call."""


class Executors(Protocol):
    """Runs a command on the named executor; cancelling the call kills the command."""

    async def run(self, executor: str, command: Command) -> CommandResult: ...
