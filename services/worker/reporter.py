"""Reports finished tasks to the scheduler in batches, keeping each result until acknowledged.

ACCEPTED (durable), DUPLICATE (reported before, that report stands) and STALE (another
attempt owns the task) all mean: forget the result. REJECTED (malformed, too large) is
logged and dropped, since sending it again cannot help. A failed call (the client has
already retried transient errors with backoff) keeps the batch for the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from protos.wsched.v1 import worker_pb2
from services.worker.client import WorkerRejected

log = logging.getLogger("wsched.worker.reporter")

_FORGET = {worker_pb2.ACK_ACCEPTED, worker_pb2.ACK_DUPLICATE, worker_pb2.ACK_STALE}


class ReportPort(Protocol):
    async def report(
        self, results: Sequence[worker_pb2.TaskResult]
    ) -> worker_pb2.ReportResponse: ...


class Reporter:
    """``add`` results; ``run`` sends them (run it as a task); ``flush`` waits for the acks."""

    def __init__(
        self,
        *,
        scheduler: ReportPort,
        linger_s: float = 0.02,
        max_batch: int = 100,
        max_batch_bytes: int = 2 * 1024 * 1024,
        retry_s: float = 1.0,
        on_ack: Callable[[str, worker_pb2.Ack.ValueType], None] | None = None,
    ) -> None:
        """``on_ack`` hears of each acknowledgement (lease token, ack): the agent's trace."""
        self._scheduler = scheduler
        self._on_ack = on_ack
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._retry_s = retry_s
        self._pending: dict[str, worker_pb2.TaskResult] = {}
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, result: worker_pb2.TaskResult) -> None:
        self._pending[result.lease_token] = result
        self._idle.clear()
        self._work.set()

    def drop(self, lease_token: str) -> bool:
        """Forget a result (its lease was lost); True if it was waiting."""
        dropped = self._pending.pop(lease_token, None) is not None
        self._settle()
        return dropped

    def pending_tokens(self) -> list[str]:
        return list(self._pending)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every result is acknowledged; False if some are left after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._pending

    async def run(self) -> None:
        while True:
            await self._work.wait()
            if self._linger_s and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._linger_s)  # let the results finishing now join
            batch = self._batch()
            if not batch:
                self._work.clear()
                continue
            if not await self._send(batch):
                await asyncio.sleep(self._retry_s)

    def _batch(self) -> list[worker_pb2.TaskResult]:
        batch: list[worker_pb2.TaskResult] = []
        size = 0
        for result in self._pending.values():
            if len(batch) >= self._max_batch:
                break
            if batch and size + result.ByteSize() > self._max_batch_bytes:
                break
            size += result.ByteSize()
            batch.append(result)
        return batch

    async def _send(self, batch: list[worker_pb2.TaskResult]) -> bool:
        try:
            reply = await self._scheduler.report(batch)
        except WorkerRejected as err:
            log.warning(
                "reporting %d result(s) failed: %s; kept, next try in %g s",
                len(batch),
                err,
                self._retry_s,
            )
            return False
        for ack in reply.acks:
            self._apply(ack)
        self._settle()
        return True

    def _apply(self, ack: worker_pb2.ReportAck) -> None:
        if ack.ack == worker_pb2.ACK_REJECTED:
            log.error(
                "the scheduler rejected the result of lease %s: %s; dropped",
                ack.lease_token,
                ack.detail,
            )
        elif ack.ack not in _FORGET:
            log.warning("unknown ack %d for lease %s; dropped", ack.ack, ack.lease_token)
        self._pending.pop(ack.lease_token, None)
        if self._on_ack is not None:
            self._on_ack(ack.lease_token, ack.ack)

    def _settle(self) -> None:
        if not self._pending:
            self._idle.set()
            self._work.clear()
