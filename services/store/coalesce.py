"""Calls of one kind that arrive while the store answers another go to it together.

A replica activating thousands of grains at once (a takeover, or one task reaching each
of thousands of idle pipelines) would otherwise read the store once per grain, each read
a transaction of several round trips through a few threads, and every grain would wait
for nearly all the others. ``Coalescer`` runs the first call at once (no added latency
when calls are rare) and gathers the calls made meanwhile into the next batch, answered
by one statement per table for all of them.

Unlike a DataLoader, which batches only the calls made in one turn of the event loop, a
batch here takes everything that queued while the previous one ran: activations arrive
one actor message at a time, never in the same turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Item = TypeVar("Item")
R = TypeVar("R")

log = logging.getLogger("wsched.store.coalesce")


class Coalescer(Generic[K, V]):
    def __init__(
        self, run: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], *, max_batch: int = 256
    ) -> None:
        """``run`` answers a batch of distinct keys; a key it leaves out fails with
        ``KeyError``. ``max_batch``: the most keys per call of ``run``."""
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._drain: asyncio.Task[None] | None = None
        #: Calls of ``run`` and keys answered, for tests and logs.
        self.batches = 0
        self.keys = 0

    async def get(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending.append((key, future))
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_pending(), name="coalesce")
        return await future

    async def _drain_pending(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._answer(batch)
        finally:
            self._drain = None

    async def _answer(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        waiting = [(key, future) for key, future in batch if not future.done()]
        if not waiting:
            return  # every caller gave up
        keys = list(dict.fromkeys(key for key, _ in waiting))
        self.batches += 1
        self.keys += len(keys)
        try:
            answers = await self._run(keys)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - each caller gets the batch's failure
            for _, future in waiting:
                if not future.done():
                    future.set_exception(err)
            return
        for key, future in waiting:
            if future.done():
                continue
            if key in answers:
                future.set_result(answers[key])
            else:
                future.set_exception(KeyError(key))


class Batcher(Generic[Item, R]):
    """``Coalescer`` for calls that are not lookups: every item is run (none merged), and
    the batch's ``run`` returns one outcome per item, an exception for an item that
    failed alone. Batches hold at most ``max_weight`` (by ``weight``) unless one item
    weighs more on its own."""

    def __init__(
        self,
        run: Callable[[Sequence[Item]], Awaitable[Sequence[R | Exception]]],
        *,
        weight: Callable[[Item], int] = lambda _item: 1,
        max_weight: int = 256,
    ) -> None:
        self._run = run
        self._weight = weight
        self._max_weight = max_weight
        self._pending: list[tuple[Item, asyncio.Future[R]]] = []
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_pending(), name="batch")
        return await future

    async def _drain_pending(self) -> None:
        try:
            while self._pending:
                taken, weight = 0, 0
                for item, _ in self._pending:
                    weight += self._weight(item)
                    if taken and weight > self._max_weight:
                        break
                    taken += 1
                batch = self._pending[:taken]
                del self._pending[:taken]
                await self._answer(batch)
        finally:
            self._drain = None

    async def _answer(self, batch: list[tuple[Item, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - each caller gets the batch's failure
            outcomes = [err] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
