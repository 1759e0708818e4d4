"""Starting, watching and stopping the processes of provisioned components, and reading
their memory off /proc (for the benchmarks here and in services/bench)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.infra.cache import ProvisionError


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A loopback port ``p`` such that ``p`` and ``p + 1`` are both free right now (a
    Kafka broker and its KRaft controller, as ``wsched dev`` places them)."""
    while True:
        port = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 1):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue  # the next port is taken (an outgoing connection, say): again
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def rss_mb(pid: int) -> float:
    """The process's resident set size now, from /proc (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True, kw_only=True)
class RunResult:
    seconds: float
    peak_rss_mb: float
    output: str


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str,
    timeout_s: float = 3600,
) -> RunResult:
    """Run a provisioning command to completion; fail with its output if it fails.

    ``peak_rss_mb`` is the largest resident set of any child process waited for so far
    in this process (``RUSAGE_CHILDREN``), which for a build is the compiler or linker.
    """
    started = time.monotonic()
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise ProvisionError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return RunResult(seconds=seconds, peak_rss_mb=peak_kb / 1024, output=proc.stdout)


@dataclass(kw_only=True)
class Service:
    """A long-running component process with its log in a file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            list(self.argv),
            cwd=self.cwd,
            env={**os.environ, **(self.env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, check: Callable[[], bool], *, timeout_s: float) -> None:
        """Poll ``check`` until it holds; fail with the log tail if the process dies or stalls."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise ProvisionError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if check():
                    return
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()  # a half-started process is of no use to anyone: do not leave it behind
        raise ProvisionError(f"{self.name} was not ready within {timeout_s:.0f}s:\n{tail}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signum)

    def stop(self, *, grace_s: float = 10) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None
