"""The executor's side of the ``Work`` stream: an agent's runs and calls, many to a message.

A unary gRPC call costs each side about as much CPU as a no-op handler's whole task
(measured with ``wsched bench-worker``: the executor spent 0.45 ms per call answering
calls it did nothing for), and an agent of 32 slots has several for its executor at
once. Over ``Work`` each item is run as its unary call would be, in a task of its own;
answers that end together leave in one message. Cancelling an item, the agent ending
the stream, or its connection dropping stops what is still running (the command's
process group, the handler's worker process), as cancelling its unary call does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from protos.wsched.v1 import executor_pb2

log = logging.getLogger("wsched.executor")

#: A message carries items or answers up to about this many bytes (gRPC refuses messages
#: over 4 MiB by default); one that is larger alone goes alone, as its unary call would.
MESSAGE_BUDGET = 1024 * 1024


class Refused(Exception):
    """What the protocol refuses, with the status its unary call answers."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Worker(Protocol):
    async def run(self, request: executor_pb2.RunRequest) -> executor_pb2.RunResponse: ...

    async def call(self, request: executor_pb2.CallRequest) -> executor_pb2.CallResponse: ...


async def _answer(worker: Worker, item: executor_pb2.WorkItem) -> executor_pb2.WorkDone:
    try:
        if item.HasField("call"):
            return executor_pb2.WorkDone(id=item.id, call=await worker.call(item.call))
        if item.HasField("run"):
            return executor_pb2.WorkDone(id=item.id, run=await worker.run(item.run))
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "an item with neither run nor call")
    except Refused as refused:
        return executor_pb2.WorkDone(
            id=item.id, code=refused.code.value[0], details=refused.details
        )
    except Exception as err:  # a bug: the item fails as its unary call would (UNKNOWN)
        log.exception("item %d of a work stream failed", item.id)
        return executor_pb2.WorkDone(
            id=item.id,
            code=grpc.StatusCode.UNKNOWN.value[0],
            details=f"Unexpected {type(err).__name__}: {err}",
        )


def serve_work(
    worker: Worker, requests: AsyncIterator[executor_pb2.WorkRequest]
) -> AsyncIterator[executor_pb2.WorkResponse]:
    """The stream's answers: its items run until the agent has ended it and every item
    has answered."""
    return _Stream(worker).answers(requests)


class _Stream:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._running: dict[int, asyncio.Task[None]] = {}
        #: Answers not sent yet; None: the agent sends no more items.
        self._answers: asyncio.Queue[executor_pb2.WorkDone | None] = asyncio.Queue()

    async def answers(
        self, requests: AsyncIterator[executor_pb2.WorkRequest]
    ) -> AsyncIterator[executor_pb2.WorkResponse]:
        reader = asyncio.create_task(self._read(requests), name="work stream reader")
        closing = False
        try:
            while not (closing and not self._running and self._answers.empty()):
                batch, closing = await self._next_answers(closing)
                if batch:
                    yield executor_pb2.WorkResponse(done=batch)
        finally:
            tasks = [reader, *self._running.values()]
            for task in tasks:
                task.cancel()  # a command's process group, a handler's process: killed
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _next_answers(self, closing: bool) -> tuple[list[executor_pb2.WorkDone], bool]:
        """The answers ready now, up to a message's budget (waiting for the first)."""
        answer = await self._answers.get()
        if self._answers.empty() and self._running:
            await asyncio.sleep(0)  # answers that end in this turn of the loop join it
        batch: list[executor_pb2.WorkDone] = []
        size = 0
        while True:
            if answer is None:
                closing = True
            else:
                batch.append(answer)
                size += answer.ByteSize()
            if size >= MESSAGE_BUDGET or self._answers.empty():
                return batch, closing
            answer = self._answers.get_nowait()

    async def _read(self, requests: AsyncIterator[executor_pb2.WorkRequest]) -> None:
        try:
            async for request in requests:
                for item in request.items:
                    self._start(item)
                for key in request.cancel:
                    task = self._running.pop(key, None)
                    if task is not None:
                        task.cancel()  # its command or worker process is killed
        finally:
            self._answers.put_nowait(None)

    def _start(self, item: executor_pb2.WorkItem) -> None:
        if item.id in self._running:
            self._answers.put_nowait(
                executor_pb2.WorkDone(
                    id=item.id,
                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    details=f"item {item.id} is running already",
                )
            )
            return
        task = asyncio.create_task(self._answer(item), name=f"work item {item.id}")
        self._running[item.id] = task
        task.add_done_callback(lambda _: self._forget(item.id, task))

    async def _answer(self, item: executor_pb2.WorkItem) -> None:
        self._answers.put_nowait(await _answer(self._worker, item))

    def _forget(self, key: int, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
