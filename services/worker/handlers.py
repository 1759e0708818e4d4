"""Python handlers: a pipeline step that names a callable (``mypkg.tasks:resize``) runs it
here, in the step's executor (``wsched executor``), never in the agent.

Why not in the agent: a handler that blocks, leaks or crashes the interpreter would stop
the agent's heartbeats, and every task it holds would be retried elsewhere. Why a process
pool by default: a thread cannot be stopped, so a handler past its execution timeout
could only be abandoned; a process can be killed. Each worker process is its own process
group (``setsid``), so killing it at the timeout takes whatever the handler started with
it, as the executor does for commands. Workers are reused between calls (imports are paid
once, as in Celery's prefork pool) and replaced after a kill or a crash.

The handler gets the task's data, parsed from JSON, as its one argument; a coroutine
function is run to completion. Its return value, as JSON, is the step's output. An
exception fails the attempt with its traceback's tail (retried by the scheduler's
policy); a return value that is not JSON, or too large, fails it for good
(``non_retryable``): another attempt would return the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from services.worker.command import HandlerCall, HandlerResult

#: Characters of a traceback kept in the error (the scheduler keeps 8,192).
_TRACEBACK_CHARS = 6000
#: Spawned, not forked: the executor runs gRPC's threads, which a fork would copy broken.
_CONTEXT = multiprocessing.get_context("spawn")
#: What a new worker process says once it serves, and how long it may take to say it.
_READY = "ready"
_START_S = 60.0


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    result: bytes = b""
    error: str = ""
    non_retryable: bool = False


def import_handler(text: str) -> Callable[[Any], Any]:
    """The callable ``package.module:attr.path`` names; ImportError or TypeError saying why."""
    module_name, _, path = text.partition(":")
    if not module_name or not path:
        raise ImportError(f"{text!r} is not package.module:function")
    target: Any = importlib.import_module(module_name)
    for part in path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as err:
            raise ImportError(f"{module_name} has no attribute {path!r}") from err
    if not callable(target):
        raise TypeError(f"{text} is a {type(target).__name__}, not a callable")
    return target  # type: ignore[no-any-return]


def invoke(handler: str, data: bytes, max_result_bytes: int) -> _Outcome:
    """Import and call ``handler`` with the parsed ``data``: what it returned, as JSON, or
    why not. Runs in a pool's worker (a process or a thread)."""
    try:
        function = import_handler(handler)
    except (ImportError, TypeError) as err:
        # Retryable: an image with the package fixed, then a requeue, makes it run.
        return _Outcome(error=f"cannot load the handler {handler}: {type(err).__name__}: {err}")
    try:
        value = function(json.loads(data) if data else None)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
    except Exception:  # noqa: BLE001 - the handler's failure is the task's, reported whole
        return _Outcome(error=traceback.format_exc()[-_TRACEBACK_CHARS:])
    return _encoded(value, max_result_bytes)


async def _awaited(value: Any) -> Any:
    return await value


def _encoded(value: Any, max_result_bytes: int) -> _Outcome:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        return _Outcome(error=f"the handler's return value is not JSON: {err}", non_retryable=True)
    result = text.encode()
    if max_result_bytes and len(result) > max_result_bytes:
        return _Outcome(
            error=f"the handler returned {len(result)} bytes of JSON, over the limit of "
            f"{max_result_bytes}: store large outputs elsewhere and return a reference",
            non_retryable=True,
        )
    return _Outcome(result=result)


#: A message between the executor and a worker process: its length, then its pickle.
_HEADER = struct.Struct("!Q")


def _read_message(sock: socket.socket) -> Any:
    """The next message on a worker's (blocking) socket; EOFError when it closed."""
    header = _read_exactly(sock, _HEADER.size)
    # The executor and its own worker processes only: nothing else writes on the socket.
    return pickle.loads(_read_exactly(sock, _HEADER.unpack(header)[0]))  # noqa: S301


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the executor closed the worker's socket")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _framed(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _serve(sock: socket.socket) -> None:
    """A process worker's loop: one call at a time, until its socket closes."""
    os.setsid()  # its own process group: a kill at the timeout takes its children too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides when it ends
    sock.sendall(_framed(_READY))
    env: dict[str, str] = {}
    while True:
        try:
            handler, data, max_result_bytes, call_env = _read_message(sock)
        except (EOFError, OSError):
            return
        if call_env != env:  # the task's variables: set only what changed
            os.environ.update(call_env)
            env = call_env
        sock.sendall(_framed(invoke(handler, data, max_result_bytes)))


@dataclass(kw_only=True, eq=False)  # compared and hashed by identity
class _Worker:
    process: multiprocessing.process.BaseProcess
    #: The executor's end of the worker's socket (asyncio streams over it).
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: It answered its last call: it may serve the next.
    reusable: bool = True

    def kill(self) -> None:
        """Kill the worker's whole process group (the handler and anything it started)."""
        self.writer.close()
        _kill_process(self.process)

    async def exchange(self, message: tuple[Any, ...]) -> _Outcome:
        """Send a call and read its outcome, in the executor's event loop: no thread
        hand-off each way (a third of a no-op call's cost in the executor, measured)."""
        self.writer.write(_framed(message))
        try:
            header = await self.reader.readexactly(_HEADER.size)
            body = await self.reader.readexactly(_HEADER.unpack(header)[0])
            outcome = pickle.loads(body)  # noqa: S301 - from the executor's own worker
        except asyncio.IncompleteReadError as err:
            raise EOFError("the handler's worker closed its socket") from err
        if not isinstance(outcome, _Outcome):
            raise EOFError("the handler's worker answered out of turn")
        return outcome


def _start_process() -> tuple[multiprocessing.process.BaseProcess, socket.socket]:
    """A new worker process and the executor's end of its socket, once it is ready: its
    interpreter's start-up (a second or so on a busy machine) must not count against the
    first call's timeout. Blocking: run on a thread."""
    parent, child = socket.socketpair()
    process = _CONTEXT.Process(target=_serve, args=(child,), daemon=True, name="wsched-handler")
    try:
        process.start()
    finally:
        child.close()
    try:
        parent.settimeout(_START_S)
        ready = _read_message(parent) == _READY
    except (EOFError, OSError, pickle.UnpicklingError):
        ready = False
    if not ready:
        _kill_process(process)
        parent.close()
        raise OSError(
            f"a handler worker process did not start within {_START_S:g} s "
            f"(exit code {process.exitcode})"
        )
    parent.settimeout(None)
    return process, parent


def _kill_process(process: multiprocessing.process.BaseProcess) -> None:
    """Kill a worker process's whole group (the handler and anything it started)."""
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)  # before its setsid, it was not a group yet
    process.join(timeout=1)  # SIGKILL: it is gone within milliseconds


def _result(outcome: _Outcome, started: float) -> HandlerResult:
    return HandlerResult(
        result=outcome.result,
        error=outcome.error,
        non_retryable=outcome.non_retryable,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _kill_unwanted(
    started: asyncio.Future[tuple[multiprocessing.process.BaseProcess, socket.socket]],
) -> None:
    if not started.cancelled() and started.exception() is None:
        process, sock = started.result()
        _kill_process(process)
        sock.close()


class ProcessPool:
    """At most ``size`` handler calls at once, each in a reusable worker process."""

    def __init__(self, *, size: int) -> None:
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        # Threads that start the workers; never the loop's default executor.
        self._starters = ThreadPoolExecutor(max_workers=size, thread_name_prefix="handler-start")

    async def call(self, call: HandlerCall, *, max_result_bytes: int) -> HandlerResult:
        async with self._slots:
            try:
                worker = self._idle.pop() if self._idle else await self._start()
            except OSError as err:
                return HandlerResult(error=str(err))
            self._busy.add(worker)
            try:
                return await self._exchange(worker, call, max_result_bytes)
            finally:  # cancelled too: a call that did not answer leaves no process behind
                self._busy.discard(worker)
                if worker.reusable:
                    self._idle.append(worker)
                else:
                    worker.kill()

    async def _start(self) -> _Worker:
        """A new worker; one whose caller was cancelled meanwhile is killed once started."""
        starting = asyncio.get_running_loop().run_in_executor(self._starters, _start_process)
        try:
            process, sock = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_kill_unwanted)
            raise
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except BaseException:
            _kill_process(process)
            sock.close()
            raise
        return _Worker(process=process, reader=reader, writer=writer)

    async def _exchange(
        self, worker: _Worker, call: HandlerCall, max_result_bytes: int
    ) -> HandlerResult:
        started = time.monotonic()
        message = (call.handler, call.data, max_result_bytes, dict(call.env))
        worker.reusable = False  # until it answers
        try:
            async with asyncio.timeout(call.timeout_s):
                outcome = await worker.exchange(message)
        except TimeoutError:
            return HandlerResult(timed_out=True, duration_ms=_ms_since(started))
        except (EOFError, OSError):
            worker.process.join(timeout=1)
            return HandlerResult(
                error=f"the handler's worker process died (exit code {worker.process.exitcode})",
                duration_ms=_ms_since(started),
            )
        worker.reusable = True
        return _result(outcome, started)

    def close(self) -> None:
        for worker in [*self._idle, *self._busy]:
            worker.kill()
        self._idle.clear()
        self._busy.clear()
        self._starters.shutdown(wait=False, cancel_futures=True)


class ThreadPool:
    """Handler calls on threads: cheap, but past its timeout a call is only abandoned."""

    def __init__(self, *, size: int) -> None:
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="handler")

    async def call(self, call: HandlerCall, *, max_result_bytes: int) -> HandlerResult:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        running = loop.run_in_executor(
            self._threads, invoke, call.handler, call.data, max_result_bytes
        )
        try:
            outcome = await asyncio.wait_for(running, call.timeout_s)
        except TimeoutError:
            return HandlerResult(timed_out=True, duration_ms=_ms_since(started))
        return _result(outcome, started)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class HandlerPools:
    """The executor's two pools, each started on first use."""

    def __init__(self, *, size: int, max_result_bytes: int) -> None:
        self._size = size
        self._max_result_bytes = max_result_bytes
        self._process: ProcessPool | None = None
        self._thread: ThreadPool | None = None

    async def call(self, call: HandlerCall) -> HandlerResult:
        limit = min(call.max_result_bytes or self._max_result_bytes, self._max_result_bytes)
        if call.pool == "thread":
            self._thread = self._thread or ThreadPool(size=self._size)
            return await self._thread.call(call, max_result_bytes=limit)
        self._process = self._process or ProcessPool(size=self._size)
        return await self._process.call(call, max_result_bytes=limit)

    def close(self) -> None:
        for pool in (self._process, self._thread):
            if pool is not None:
                pool.close()
