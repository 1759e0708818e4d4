"""The local deployer's child processes: started, recorded on disk, stopped in order.

Each process runs in a session of its own, so that a Ctrl-C meant for the API (or for
``wsched dev``) does not reach it: the deployer stops agents first and executors after,
which a signal to everyone at once would not do. Because such processes outlive a
crashed API, each pipeline's are recorded in ``processes.json`` (pid and start time, so a
reused pid is never mistaken for ours) and whoever comes next stops what is recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("wsched.deploy.local")

RECORD = "processes.json"
AGENT = "agent"
EXECUTOR = "executor"
#: After SIGKILL, how long to wait for the kernel to take a process away.
_KILL_WAIT_S = 5.0


_HAS_PROC = Path("/proc/self/stat").exists()


def identity(pid: int) -> str | None:
    """When the process started (None if there is no such process): tells our process
    from another that got its pid later."""
    if not _HAS_PROC:  # macOS: ask ps
        return _ps_start_time(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie is gone for our purposes


def _ps_start_time(pid: int) -> str | None:
    try:
        out = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or None


@dataclass(kw_only=True)
class LocalProcess:
    """One agent or executor; ``popen`` is None for one recorded by an earlier API."""

    role: str
    name: str
    pid: int
    started: str | None
    argv: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_after: float = 0.0

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.started is not None and identity(self.pid) == self.started

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL its whole process group (its session: pgid == pid)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None:
            return "(no log)"
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "pid": self.pid, "started": self.started}


def spawn(
    *, role: str, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
) -> LocalProcess:
    """Start a process in a session of its own, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return LocalProcess(
        role=role,
        name=name,
        pid=popen.pid,
        started=identity(popen.pid),
        argv=tuple(argv),
        env=dict(env),
        log_path=log_path,
        popen=popen,
    )


def respawn(process: LocalProcess) -> LocalProcess:
    if process.log_path is None:
        raise ValueError(f"{process.name} was recorded by another process; it cannot restart")
    fresh = spawn(
        role=process.role,
        name=process.name,
        argv=process.argv,
        env=process.env,
        log_path=process.log_path,
    )
    fresh.restarts = process.restarts + 1
    return fresh


def _wait_gone(processes: Iterable[LocalProcess], timeout_s: float) -> list[LocalProcess]:
    """Those of ``processes`` still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in processes if p.alive()]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if p.alive()]
    return left


def _stop_group(
    processes: Sequence[LocalProcess], *, signum: int, wait_s: float, what: str
) -> None:
    for process in processes:
        process.signal(signum)
    stubborn = _wait_gone(processes, wait_s)
    for process in stubborn:
        log.warning("%s %s did not stop within %.0f s: killed", what, process.name, wait_s)
        process.kill()
    for process in _wait_gone(stubborn, _KILL_WAIT_S):
        log.error("%s %s (pid %d) survived SIGKILL", what, process.name, process.pid)


def stop_processes(
    processes: Sequence[LocalProcess], *, agent_wait_s: float, executor_wait_s: float
) -> None:
    """Agents first (SIGTERM: they finish or abandon their tasks within their grace), then
    executors (SIGINT: stop at once, killing their commands); SIGKILL after the waits.
    Blocking: async callers run it in a thread."""
    agents = [p for p in processes if p.role == AGENT]
    executors = [p for p in processes if p.role != AGENT]
    _stop_group(agents, signum=signal.SIGTERM, wait_s=agent_wait_s, what="agent")
    _stop_group(executors, signum=signal.SIGINT, wait_s=executor_wait_s, what="executor")


def write_record(directory: Path, processes: Iterable[LocalProcess]) -> None:
    """Write the pids to ``directory/processes.json`` (atomically: a crash mid-write must
    not lose the record of what runs)."""
    path = directory / RECORD
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"processes": [p.to_json() for p in processes]}, indent=2))
    temp.replace(path)


def read_record(directory: Path) -> list[LocalProcess]:
    try:
        document = json.loads((directory / RECORD).read_text())
        return [
            LocalProcess(
                role=str(entry["role"]),
                name=str(entry["name"]),
                pid=int(entry["pid"]),
                started=entry.get("started"),
            )
            for entry in document["processes"]
        ]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring the unreadable %s: %s", directory / RECORD, err)
        return []


def clear_record(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / RECORD).unlink()


def stop_recorded(
    root: Path, *, agent_wait_s: float = 10.0, executor_wait_s: float = 5.0
) -> list[int]:
    """Stop every process recorded under ``root/*/`` that still runs (left by an API that
    did not shut down cleanly); the pids that were stopped. Blocking."""
    stopped: list[int] = []
    for directory in sorted(p.parent for p in root.glob(f"*/{RECORD}")):
        running = [p for p in read_record(directory) if p.alive()]
        if running:
            log.warning(
                "stopping %d process(es) left running in %s: %s",
                len(running),
                directory,
                ", ".join(f"{p.name} (pid {p.pid})" for p in running),
            )
            stop_processes(running, agent_wait_s=agent_wait_s, executor_wait_s=executor_wait_s)
            stopped += [p.pid for p in running]
        clear_record(directory)
    return stopped
