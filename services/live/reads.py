"""Reads of task rows for waiters, coalesced: one statement per pipeline for all the
reads asked for while the previous one ran.

One event may end hundreds of tasks, each with a waiter: hundreds of single-row reads,
each a thread hop and a round trip, queue behind the few threads the API reads with.
Measured with 1,000 waiters (``wsched bench-waiters``), that queue, not the events, was
the latency; a batch of ids per statement removes it. One statement at a time per
process, like a group commit: while it runs, the next batch gathers, so a slow database
makes batches larger rather than queues longer (several statements at once measured
worse: a backlog became many small statements queued behind each other).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("wsched.api.live")
T = TypeVar("T")

ReadMany = Callable[[str, Sequence[str]], Awaitable[dict[str, T]]]
#: Ids per statement: an ``IN`` list well inside any database's limits.
MAX_BATCH = 500


class BatchedReads(Generic[T]):
    def __init__(self, read_many: ReadMany[T], *, max_batch: int = MAX_BATCH) -> None:
        self._read_many = read_many
        self._max_batch = max_batch
        self._pending: dict[str, dict[str, list[asyncio.Future[T | None]]]] = {}
        self._running = False
        #: Kept: the event loop holds its tasks weakly.
        self._drainer: asyncio.Task[None] | None = None
        self.statements = 0

    async def read(self, pipeline_id: str, task_id: str) -> T | None:
        """The row of ``task_id`` (None: no such task), read with the others asked for."""
        future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(pipeline_id, {}).setdefault(task_id, []).append(future)
        if not self._running:
            self._running = True
            # In a context of its own: a statement for many requests is none of theirs
            # (not the first one's caller in the fair pool, nor its trace).
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), context=contextvars.Context()
            )
        return await future

    async def _drain(self) -> None:
        """Read what is pending, then what was asked for meanwhile, until nothing is."""
        try:
            await asyncio.sleep(0)  # the wakes of one event all land in this batch
            while self._pending:
                pending, self._pending = self._pending, {}
                await asyncio.gather(
                    *(
                        self._read(pipeline_id, batch)
                        for pipeline_id, waiting in pending.items()
                        for batch in _cut(waiting, self._max_batch)
                    )
                )
        finally:
            self._running = False

    async def _read(
        self, pipeline_id: str, waiting: dict[str, list[asyncio.Future[T | None]]]
    ) -> None:
        self.statements += 1
        try:
            rows = await self._read_many(pipeline_id, list(waiting))
        except Exception as err:  # noqa: BLE001 - each reader gets the error as its own
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(err)
            return
        for task_id, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(rows.get(task_id))


def _cut(
    waiting: dict[str, list[asyncio.Future[T | None]]], size: int
) -> list[dict[str, list[asyncio.Future[T | None]]]]:
    ids = list(waiting)
    return [{i: waiting[i] for i in ids[n : n + size]} for n in range(0, len(ids), size)]
