"""``wsched executor``: a small gRPC server that runs commands (and Python handlers, see
:mod:`services.worker.handlers`) for the worker agent.

This is the seed's command-executor. In a pod every executor is its own container (its
own image: wget, tesseract ...) running ``wsched executor`` on a localhost port or a
Unix socket in the shared volume; locally the executors are processes on the machine.

Each command runs with ``/bin/sh -c`` in its own process group, in the work directory
the agent names. Its stdout is kept up to a limit (its total size is counted), its
stderr as a tail. The whole group is killed (SIGKILL) when the command times out, when
the agent cancels the call or its connection drops, and when the shell exits, so that
nothing a command started outlives it (a process that escapes with ``setsid`` is beyond
reach). Whoever can connect can run commands: listen on loopback or in the pod's shared
volume only. Processes orphaned inside the container are reparented to PID 1; run the
executor under an init (``tini``) or with ``shareProcessNamespace`` so they are reaped.

Shutdown. In a pod every container gets SIGTERM at once, while the agent may still
need this executor to finish its tasks within its grace period; so after SIGTERM the
executor serves on for ``WSCHED_WORKER_EXECUTOR_GRACE_S`` (run executors as native
sidecars and they are stopped after the agent instead). SIGINT or a second SIGTERM
stops it at once, killing the commands still running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import grpc
from opentelemetry import context as otel_context
from pydantic import ValidationError

from protos.wsched.v1 import executor_pb2, executor_pb2_grpc
from services.observability import TRACEPARENT_ENV, configure_logging, parent_context
from services.worker.command import (
    Command,
    CommandResult,
    HandlerCall,
)
from services.worker.definition import check_handler
from services.worker.executor_work import Refused, serve_work
from services.worker.handlers import HandlerPools
from services.worker.settings import ExecutorSettings, explain

log = logging.getLogger("wsched.executor")
_T = TypeVar("_T")

_READ_CHUNK = 64 * 1024
#: After the shell ended, how long to wait for its pipes to close (an escaped child may
#: hold them open forever).
_PIPE_DRAIN_S = 2.0
#: How often to look whether the shell exited while its pipes are still open.
_EXIT_POLL_S = 0.05
#: Unix socket paths are limited by ``sockaddr_un``.
_MAX_SOCKET_PATH = 107


# -- running a command --------------------------------------------------------------------


class _Head:
    """The first ``limit`` bytes of a stream, and how many there were in all."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.total = 0
        self._limit = limit

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self._limit = limit

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self._limit:
            del self.data[: len(self.data) - self._limit]


async def _pump(stream: asyncio.StreamReader | None, sink: Callable[[bytes], None]) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_READ_CHUNK):
        sink(chunk)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _exit_of(proc: asyncio.subprocess.Process) -> None:
    """The shell's exit. ``proc.wait()`` alone also waits for the pipes to close, which a
    background child of the command may hold open long after the shell has exited."""
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=_EXIT_POLL_S)
    finally:
        waiter.cancel()


async def _finished(proc: asyncio.subprocess.Process, timeout_s: float | None) -> bool:
    """Wait for the shell to exit; False if ``timeout_s`` passed first."""
    try:
        async with asyncio.timeout(timeout_s):
            await _exit_of(proc)
    except TimeoutError:
        return False
    return True


async def _reap(proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]) -> None:
    _kill_group(proc.pid)  # the group id is the shell's pid (a new session)
    await _exit_of(proc)
    _, pending = await asyncio.wait(pumps, timeout=_PIPE_DRAIN_S)
    for pump in pending:
        pump.cancel()


async def run_command(
    command: Command,
    *,
    max_stdout_bytes: int,
    stderr_tail_bytes: int,
    groups: set[int] | None = None,
) -> CommandResult:
    """Run ``command`` to its end; kill its process group on timeout or cancellation.

    ``groups`` holds the process groups running right now, for a shutdown to kill.
    """
    started = time.monotonic()
    # The executor's environment plus the agent's few variables (task id, work dir).
    env = {**os.environ, **command.env} if command.env else None
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command.text,
        cwd=command.work_dir or None,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    limit = min(command.max_stdout_bytes or max_stdout_bytes, max_stdout_bytes)
    out, err = _Head(limit), _Tail(stderr_tail_bytes)
    pumps = [
        asyncio.create_task(_pump(proc.stdout, out.add)),
        asyncio.create_task(_pump(proc.stderr, err.add)),
    ]
    if groups is not None:
        groups.add(proc.pid)
    try:
        exited = await _finished(proc, command.timeout_s)
    finally:  # cancelled too: nothing the command started may outlive the call
        await _reap(proc, pumps)
        if groups is not None:
            groups.discard(proc.pid)
    return _result(proc.returncode or 0, out, err, timed_out=not exited, started=started)


def _result(
    returncode: int, out: _Head, err: _Tail, *, timed_out: bool, started: float
) -> CommandResult:
    signum = -returncode if returncode < 0 else 0
    return CommandResult(
        exit_code=128 + signum if signum else returncode,
        stdout=bytes(out.data),
        stdout_total_bytes=out.total,
        stderr_tail=bytes(err.data),
        timed_out=timed_out,
        killed=bool(signum),
        signal=signum,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


# -- the gRPC server ----------------------------------------------------------------------


@contextlib.contextmanager
def in_step_context(env: Mapping[str, str]) -> Iterator[None]:
    """The agent's step span (``TRACEPARENT``, when traced) as the current context, so
    that this process's log lines about the call carry its ids; it makes no spans."""
    parent = parent_context(env.get(TRACEPARENT_ENV))
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


class ExecutorService(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, *, settings: ExecutorSettings) -> None:
        self._settings = settings
        self.groups: set[int] = set()
        self.handlers = HandlerPools(
            size=settings.handler_workers, max_result_bytes=settings.max_result_bytes
        )

    async def Call(
        self, request: executor_pb2.CallRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CallResponse:
        return await _unary(self.call(request), context)

    async def Run(
        self, request: executor_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.RunResponse:
        return await _unary(self.run(request), context)

    async def Work(
        self,
        requests: AsyncIterator[executor_pb2.WorkRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[executor_pb2.WorkResponse]:
        # An async generator itself: gRPC tells a streaming handler by its function.
        async for response in serve_work(self, requests):
            yield response

    async def call(self, request: executor_pb2.CallRequest) -> executor_pb2.CallResponse:
        """A handler call's answer; Refused for what the protocol refuses."""
        try:
            check_handler(request.handler)
        except ValueError as err:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
        if request.pool not in ("", "process", "thread"):
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"pool {request.pool!r}: process or thread"
            )
        call = HandlerCall(
            handler=request.handler,
            data=request.data,
            pool=request.pool or "process",
            timeout_s=request.timeout_ms / 1000 if request.timeout_ms else None,
            max_result_bytes=request.max_result_bytes,
            env=dict(request.env),
        )
        with in_step_context(call.env):
            log.debug("calling %s in a %s pool", call.handler, call.pool)
            result = await self.handlers.call(call)
        return executor_pb2.CallResponse(
            result=result.result,
            error=result.error,
            timed_out=result.timed_out,
            non_retryable=result.non_retryable,
            duration_ms=result.duration_ms,
        )

    async def run(self, request: executor_pb2.RunRequest) -> executor_pb2.RunResponse:
        """A command's answer; Refused for what the protocol refuses."""
        if not request.command.strip():
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the command is empty")
        command = Command(
            text=request.command,
            work_dir=request.work_dir,
            env=dict(request.env),
            timeout_s=request.timeout_ms / 1000 if request.timeout_ms else None,
            max_stdout_bytes=request.max_stdout_bytes,
        )
        with in_step_context(command.env):
            log.debug("running %.200r in %s", command.text, command.work_dir or ".")
            try:
                result = await run_command(
                    command,
                    max_stdout_bytes=self._settings.max_stdout_bytes,
                    stderr_tail_bytes=self._settings.stderr_tail_bytes,
                    groups=self.groups,
                )
            except OSError as err:  # no such work dir in this container, no /bin/sh ...
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"cannot start /bin/sh in {command.work_dir or '.'!r}: {err} "
                    "(is the shared work volume mounted in this executor?)",
                ) from None
            log.debug("exit %d after %d ms", result.exit_code, result.duration_ms)
        return to_response(result)

    def kill_all(self) -> None:
        for pgid in list(self.groups):
            _kill_group(pgid)
        self.handlers.close()


async def _unary(answer: Awaitable[_T], context: grpc.aio.ServicerContext) -> _T:
    """A unary call's answer; what the protocol refuses aborts it with its status."""
    try:
        return await answer
    except Refused as refused:
        await context.abort(refused.code, refused.details)
        raise AssertionError("abort returned") from refused  # pragma: no cover


def to_response(result: CommandResult) -> executor_pb2.RunResponse:
    return executor_pb2.RunResponse(
        exit_code=result.exit_code,
        stdout=result.stdout,
        stdout_total_bytes=result.stdout_total_bytes,
        stderr_tail=result.stderr_tail,
        timed_out=result.timed_out,
        killed=result.killed,
        signal=result.signal,
        duration_ms=result.duration_ms,
    )


def from_response(reply: executor_pb2.RunResponse) -> CommandResult:
    return CommandResult(
        exit_code=reply.exit_code,
        stdout=reply.stdout,
        stdout_total_bytes=reply.stdout_total_bytes,
        stderr_tail=reply.stderr_tail,
        timed_out=reply.timed_out,
        killed=reply.killed,
        signal=reply.signal,
        duration_ms=reply.duration_ms,
    )


def socket_path(listen: str) -> Path | None:
    """The file of a ``unix:`` address, else None."""
    if listen.startswith("unix://"):
        return Path(listen.removeprefix("unix://"))
    if listen.startswith("unix:"):
        return Path(listen.removeprefix("unix:"))
    return None


def _bind(server: grpc.aio.Server, listen: str) -> str:
    """Listen on ``listen``; the address bound (a port 0 replaced by the port chosen)."""
    path = socket_path(listen)
    if path is not None:
        if len(str(path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"the socket path {path} is longer than {_MAX_SOCKET_PATH} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()  # left by an executor that was killed
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as err:
        raise ValueError(f"cannot listen on {listen}: {err}") from err
    if path is not None:
        return listen
    if port == 0:
        raise ValueError(f"cannot listen on {listen}")
    return f"{listen.rsplit(':', 1)[0]}:{port}"


async def serve(
    *, settings: ExecutorSettings, listen: str, stopping: asyncio.Event, now: asyncio.Event
) -> None:
    """Serve until ``stopping`` and then the grace period (or ``now``) have passed."""
    service = ExecutorService(settings=settings)
    server = grpc.aio.server()
    executor_pb2_grpc.add_ExecutorServicer_to_server(service, server)
    bound = _bind(server, listen)
    await server.start()
    log.info("executor listening on %s", bound)
    try:
        await stopping.wait()
        if settings.grace_s and not now.is_set():
            log.info(
                "stopping: serving on for up to %g s while the agent finishes", settings.grace_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(now.wait(), settings.grace_s)
    finally:
        await server.stop(grace=None)  # cancels running calls, which kill their commands
        service.kill_all()
        path = socket_path(listen)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        log.info("executor stopped")


async def _main(settings: ExecutorSettings, listen: str) -> None:
    stopping, now = asyncio.Event(), asyncio.Event()

    def on_term() -> None:
        if stopping.is_set():
            now.set()
        stopping.set()

    def on_int() -> None:
        now.set()
        stopping.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_int)
    await serve(settings=settings, listen=listen, stopping=stopping, now=now)


def executor_main(listen: str | None = None) -> None:
    """``wsched executor [--listen ADDRESS]``: ``listen`` else WSCHED_WORKER_EXECUTOR_LISTEN."""
    try:
        settings = ExecutorSettings()
    except ValidationError as err:
        print(f"wsched executor: {explain(err, prefix='WSCHED_WORKER_EXECUTOR_')}", file=sys.stderr)
        raise SystemExit(2) from err
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    address = listen or settings.listen
    if not address:
        print(
            "wsched executor: say where to listen: --listen unix:///path.sock or host:port, "
            "or WSCHED_WORKER_EXECUTOR_LISTEN",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # Not on uvloop: libuv spawns with fork(), and a shell forked beside gRPC's threads
    # crashed (SIGSEGV before its exec, measured); asyncio's subprocesses use vfork.
    _watch_children_with_pidfds()
    try:
        asyncio.run(_main(settings, address))
    except ValueError as err:
        print(f"wsched executor: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def _watch_children_with_pidfds() -> None:
    """Before Python 3.12, asyncio waits for each subprocess on a thread of its own
    (``ThreadedChildWatcher``): a thread started and joined per command. py-spy on an
    executor running a shell per task showed that at an eighth of its CPU. A pidfd
    (Linux 5.3+) is watched by the event loop itself, as 3.12 does by default."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel or a seccomp profile without pidfds: keep the default
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="wsched executor", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", help="unix:///path.sock or host:port")
    executor_main(parser.parse_args().listen)
