"""The worker side of the gRPC protocol: poll, heartbeat and report, following redirects.

A replica that does not own the pipeline answers FAILED_PRECONDITION with the owner in
the ``wsched-owner`` trailing metadata: the client reconnects there. UNAVAILABLE (a grain
moving, the store down) and connection failures are retried with bounded backoff; a
result is kept by the caller until a report is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from protos.wsched.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger("wsched.worker.client")
T = TypeVar("T")

OWNER_KEY = "wsched-owner"
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class WorkerRejected(Exception):
    """The scheduler refused the worker for good (bad token, unknown pipeline)."""


@dataclass(frozen=True, kw_only=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 5.0
    #: Give up after this many consecutive failures of one call.
    attempts: int = 60


#: Longer than any call's deadline (a report's 30 s, a poll's wait + 10 s): a channel left
#: behind is closed once the calls still running on it are done, never under them.
_CLOSE_GRACE_S = 60.0


class SchedulerClient:
    def __init__(
        self,
        *,
        addresses: Sequence[str],
        pipeline_id: str,
        token: str,
        worker: str,
        backoff: Backoff | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one scheduler address is needed")
        self._addresses = list(addresses)
        self._current = 0
        self.pipeline_id = pipeline_id
        self.worker = worker
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._backoff = backoff or Backoff()
        self._channel: grpc.aio.Channel | None = None
        self._stub: worker_pb2_grpc.WorkerStub | None = None
        self._target: str | None = None
        #: Old channels closing in the background (a reference keeps each task alive).
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def target(self) -> str:
        return self._target or self._addresses[self._current]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
        # Old channels close as soon as their last call ends; the caller has ended its own.
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _connect(self, target: str) -> worker_pb2_grpc.WorkerStub:
        if self._stub is None or target != self._target:
            if self._channel is not None:
                # Another call of this client (a poll beside a report) may still be running
                # on the old channel: closing it at once would cancel that call.
                closing = asyncio.get_running_loop().create_task(
                    self._channel.close(grace=_CLOSE_GRACE_S)
                )
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            self._channel = grpc.aio.insecure_channel(target)
            self._stub = worker_pb2_grpc.WorkerStub(self._channel)
            self._target = target
        return self._stub

    async def _call(
        self, what: str, invoke: Callable[[worker_pb2_grpc.WorkerStub], Awaitable[T]]
    ) -> T:
        delay = self._backoff.initial_s
        for attempt in range(1, self._backoff.attempts + 1):
            stub = self._connect(self.target)
            try:
                return await invoke(stub)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION and self._redirect(err):
                    continue
                if err.code() not in _RETRYABLE:
                    raise WorkerRejected(f"{what}: {err.code().name}: {err.details()}") from err
                if attempt % 3 == 0:
                    self._rotate()  # the replica may be gone: try another
                log.info(
                    "%s on %s failed (%s); retry in %.2fs",
                    what,
                    self.target,
                    err.code().name,
                    delay,
                )
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, self._backoff.max_s)
        raise WorkerRejected(f"{what}: gave up after {self._backoff.attempts} attempts")

    def _redirect(self, err: grpc.aio.AioRpcError) -> bool:
        for key, value in err.trailing_metadata() or ():
            if key == OWNER_KEY and isinstance(value, str) and value:
                log.info("pipeline %s is served by %s: following", self.pipeline_id, value)
                self._connect(value)  # a new channel only if the owner is another replica
                return True
        return False

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self._addresses)
        self._target = None

    async def poll(
        self, *, max_tasks: int, max_bytes: int = 1024 * 1024, wait_ms: int = 10_000
    ) -> worker_pb2.PollResponse:
        request = worker_pb2.PollRequest(
            pipeline_id=self.pipeline_id,
            worker=self.worker,
            max_tasks=max_tasks,
            max_bytes=max_bytes,
            wait_ms=wait_ms,
        )
        timeout = wait_ms / 1000 + 10
        return await self._call(
            "poll", lambda s: s.Poll(request, metadata=self._metadata, timeout=timeout)
        )

    async def heartbeat(self, tokens: Sequence[str]) -> worker_pb2.HeartbeatResponse:
        request = worker_pb2.HeartbeatRequest(
            pipeline_id=self.pipeline_id, worker=self.worker, lease_tokens=list(tokens)
        )
        return await self._call(
            "heartbeat", lambda s: s.Heartbeat(request, metadata=self._metadata, timeout=10)
        )

    async def report(self, results: Sequence[worker_pb2.TaskResult]) -> worker_pb2.ReportResponse:
        request = worker_pb2.ReportRequest(
            pipeline_id=self.pipeline_id, worker=self.worker, results=list(results)
        )
        return await self._call(
            "report", lambda s: s.Report(request, metadata=self._metadata, timeout=30)
        )
