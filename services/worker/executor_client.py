"""The agent's side of its executors: :class:`ExecutorClients`, a ``Work`` stream each.

Every run and call an agent has for an executor goes over one ``Work`` stream (see
:mod:`services.worker.executor_work`): items that start together leave in one message,
answers come back matched by id. An executor that does not know ``Work`` (an older
image) answers UNIMPLEMENTED, and the agent then uses the unary ``Run`` and ``Call``
with it, as before. A stream that breaks (the executor restarted, its connection
dropped) fails the items it carried, as their unary calls would have failed, and the
next item opens a new one once the executor accepts connections again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator, Mapping

import grpc

from protos.wsched.v1 import executor_pb2, executor_pb2_grpc
from services.worker.command import (
    Command,
    CommandResult,
    ExecutorError,
    HandlerCall,
    HandlerResult,
)
from services.worker.executor import from_response
from services.worker.executor_work import MESSAGE_BUDGET

_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: Past an item's own timeout, how long to wait for its answer before calling the
#: executor hung (the executor enforces the timeout; this only guards against that).
_DEADLINE_SLACK_S = 30.0


def _wire_ms(timeout_s: float | None) -> int:
    """A timeout as the protocol's ``timeout_ms``: 0 for none, else at least 1."""
    if timeout_s is None:
        return 0
    return min(max(1, math.ceil(timeout_s * 1000)), 2**32 - 1)


def _deadline(timeout_s: float | None) -> float | None:
    return timeout_s + _DEADLINE_SLACK_S if timeout_s is not None else None


def _run_request(command: Command) -> executor_pb2.RunRequest:
    return executor_pb2.RunRequest(
        command=command.text,
        work_dir=command.work_dir,
        env=dict(command.env),
        timeout_ms=_wire_ms(command.timeout_s),
        max_stdout_bytes=command.max_stdout_bytes,
    )


def _call_request(call: HandlerCall) -> executor_pb2.CallRequest:
    return executor_pb2.CallRequest(
        handler=call.handler,
        data=call.data,
        pool=call.pool,
        timeout_ms=_wire_ms(call.timeout_s),
        max_result_bytes=call.max_result_bytes,
        env=dict(call.env),
    )


def _handler_result(reply: executor_pb2.CallResponse) -> HandlerResult:
    return HandlerResult(
        result=reply.result,
        error=reply.error,
        timed_out=reply.timed_out,
        non_retryable=reply.non_retryable,
        duration_ms=reply.duration_ms,
    )


class _Broken(ExecutorError):
    """The stream an item travelled on ended before the item's answer."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Work:
    """One ``Work`` stream: items sent as they come (those that come while a message is
    being written leave together in the next), answers matched to them by id."""

    def __init__(self, channel: grpc.aio.Channel, *, describe: str) -> None:
        self._describe = describe
        self._call = executor_pb2_grpc.ExecutorStub(channel).Work()
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[executor_pb2.WorkDone]] = {}
        self._items: list[executor_pb2.WorkItem] = []
        self._cancels: list[int] = []
        self._wake = asyncio.Event()
        #: Why the stream ended; a new one is needed for the next item.
        self.broken: _Broken | None = None
        self._sender = asyncio.create_task(self._send(), name=f"{describe}: work sender")
        self._receiver = asyncio.create_task(self._receive(), name=f"{describe}: work receiver")

    async def ask(
        self,
        *,
        run: executor_pb2.RunRequest | None = None,
        call: executor_pb2.CallRequest | None = None,
    ) -> executor_pb2.WorkDone:
        """The item's answer; cancelling the wait stops the item in the executor."""
        if self.broken is not None:
            raise _Broken(str(self.broken), code=self.broken.code)
        key = self._next_id
        self._next_id += 1
        item = executor_pb2.WorkItem(id=key, run=run, call=call)
        future: asyncio.Future[executor_pb2.WorkDone] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        self._items.append(item)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            if self._waiting.pop(key, None) is not None:
                unsent = [queued for queued in self._items if queued is not item]
                if len(unsent) < len(self._items):
                    self._items = unsent  # not sent yet: nothing to stop
                else:
                    self._cancels.append(key)
                    self._wake.set()
            raise

    async def _send(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._items or self._cancels:
                    request = executor_pb2.WorkRequest(cancel=self._cancels)
                    self._cancels = []
                    size, taken = 0, 0
                    for item in self._items:
                        taken += 1
                        size += item.ByteSize()
                        if size >= MESSAGE_BUDGET:
                            break
                    request.items.extend(self._items[:taken])
                    del self._items[:taken]
                    await self._call.write(request)
        # A failed write breaks the stream: the receiver says why and fails the items.

    async def _receive(self) -> None:
        broken: _Broken
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    broken = _Broken(f"{self._describe}: the executor ended the stream")
                    break
                for done in response.done:
                    future = self._waiting.pop(done.id, None)
                    if future is not None and not future.done():
                        future.set_result(done)
        except grpc.aio.AioRpcError as err:
            broken = _Broken(
                f"{self._describe}: {err.code().name}: {err.details()}", code=err.code()
            )
        except asyncio.CancelledError:
            self._end(_Broken(f"{self._describe}: the agent closed the stream"))
            raise
        self._end(broken)

    def _end(self, broken: _Broken) -> None:
        self.broken = broken
        self._sender.cancel()
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(_Broken(str(broken), code=broken.code))

    async def close(self) -> None:
        self._call.cancel()
        for task in (self._sender, self._receiver):
            task.cancel()
        await asyncio.gather(self._sender, self._receiver, return_exceptions=True)


class ExecutorClients:
    """The agent's :class:`~services.worker.command.Executors`: a channel per executor,
    and on it a ``Work`` stream (or unary calls, for an executor without ``Work``)."""

    def __init__(self, *, addresses: Mapping[str, str], connect_timeout_s: float = 60.0) -> None:
        self._addresses = dict(addresses)
        self._connect_timeout_s = connect_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._works: dict[str, _Work] = {}
        #: Executors that answered ``Work`` with UNIMPLEMENTED (older images).
        self._unary: set[str] = set()
        #: A stream being opened: items that come meanwhile wait for it together.
        self._opening: dict[str, asyncio.Task[_Work]] = {}

    def _describe(self, executor: str) -> str:
        return f"executor {executor!r} at {self._addresses[executor]}"

    def _channel(self, executor: str) -> grpc.aio.Channel:
        if executor not in self._addresses:
            raise ExecutorError(
                f"no address for executor {executor!r}: add it to WSCHED_WORKER_EXECUTORS"
            )
        if executor not in self._channels:
            self._channels[executor] = grpc.aio.insecure_channel(self._addresses[executor])
        return self._channels[executor]

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until every executor accepts connections; raise ExecutorError naming any
        that does not within the time."""
        for executor in self._addresses:
            await self._ready(executor, self._connect_timeout_s if timeout_s is None else timeout_s)

    async def _ready(self, executor: str, timeout_s: float) -> grpc.aio.Channel:
        channel = self._channel(executor)
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout_s)
        except TimeoutError:
            raise ExecutorError(
                f"{self._describe(executor)} accepted no connection "
                f"within {timeout_s:g} s: is `wsched executor` running there?"
            ) from None
        return channel

    async def run(self, executor: str, command: Command) -> CommandResult:
        request = _run_request(command)
        done = await self._work(executor, command.timeout_s, run=request)
        if done is not None:
            return from_response(done.run)
        channel = await self._ready(executor, self._wait_s(command.timeout_s))
        stub = executor_pb2_grpc.ExecutorStub(channel)
        with self._unary_errors(executor):
            return from_response(await stub.Run(request, timeout=_deadline(command.timeout_s)))

    async def call(self, executor: str, call: HandlerCall) -> HandlerResult:
        request = _call_request(call)
        done = await self._work(executor, call.timeout_s, call=request)
        if done is not None:
            return _handler_result(done.call)
        channel = await self._ready(executor, self._wait_s(call.timeout_s))
        stub = executor_pb2_grpc.ExecutorStub(channel)
        with self._unary_errors(executor):
            return _handler_result(await stub.Call(request, timeout=_deadline(call.timeout_s)))

    def _wait_s(self, timeout_s: float | None) -> float:
        """Bounded wait for a restarting executor; then the item fails fast if it drops."""
        return min(self._connect_timeout_s, timeout_s or self._connect_timeout_s)

    async def _work(
        self,
        executor: str,
        timeout_s: float | None,
        *,
        run: executor_pb2.RunRequest | None = None,
        call: executor_pb2.CallRequest | None = None,
    ) -> executor_pb2.WorkDone | None:
        """The item's answer over the executor's stream; None: use the unary call."""
        if executor in self._unary:
            return None
        work = self._works.get(executor)
        if work is None or work.broken is not None:
            work = await self._open(executor, timeout_s)
        deadline = _deadline(timeout_s)
        try:
            async with asyncio.timeout(deadline):
                done = await work.ask(run=run, call=call)
        except TimeoutError:
            raise ExecutorError(
                f"{self._describe(executor)}: DEADLINE_EXCEEDED: no answer within {deadline:g} s"
            ) from None
        except _Broken as err:
            if err.code is not grpc.StatusCode.UNIMPLEMENTED:
                raise
            self._unary.add(executor)  # an older executor: it ran nothing of this item
            return None
        if done.code:
            code = _CODES.get(done.code)
            name = code.name if code is not None else f"status {done.code}"
            raise ExecutorError(f"{self._describe(executor)}: {name}: {done.details}")
        return done

    async def _open(self, executor: str, timeout_s: float | None) -> _Work:
        """The executor's stream, opened once it accepts connections by the first item
        that needs it; the items that come meanwhile wait for the same opening (and so
        set out together, in one message)."""
        opening = self._opening.get(executor)
        if opening is None:
            opening = asyncio.create_task(self._reopen(executor, timeout_s))
            self._opening[executor] = opening
            opening.add_done_callback(lambda _: self._opening.pop(executor, None))
        return await asyncio.shield(opening)

    async def _reopen(self, executor: str, timeout_s: float | None) -> _Work:
        channel = await self._ready(executor, self._wait_s(timeout_s))
        old = self._works.pop(executor, None)
        if old is not None:
            await old.close()
        work = self._works[executor] = _Work(channel, describe=self._describe(executor))
        return work

    @contextlib.contextmanager
    def _unary_errors(self, executor: str) -> Iterator[None]:
        try:
            yield
        except grpc.aio.AioRpcError as err:
            raise ExecutorError(
                f"{self._describe(executor)}: {err.code().name}: {err.details()}"
            ) from err

    async def close(self) -> None:
        for work in self._works.values():
            await work.close()
        self._works.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
