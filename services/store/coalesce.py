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
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Item = TypeVar("Item")
R = TypeVar("R")

log = logging.getLogger("wsched.store.coalesce")


class Coalescer(Generic[K, V]):
    def __init__(
        self,
        run: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
        *,
        max_batch: int = 256,
        concurrency: int = 1,
    ) -> None:
        """``run`` answers a batch of distinct keys; a key it leaves out fails with
        ``KeyError``. ``max_batch``: the most keys per call of ``run``; ``concurrency``:
        the most calls of ``run`` at once."""
        self._run = run
        self._batcher: Batcher[K, V] = Batcher(
            self._answer, max_weight=max_batch, concurrency=concurrency
        )
        #: Calls of ``run`` and keys answered, for tests and logs.
        self.batches = 0
        self.keys = 0

    async def get(self, key: K) -> V:
        return await self._batcher.submit(key)

    async def _answer(self, asked: Sequence[K]) -> list[V | Exception]:
        keys = list(dict.fromkeys(asked))
        self.batches += 1
        self.keys += len(keys)
        answers = await self._run(keys)
        return [answers[key] if key in answers else KeyError(key) for key in asked]


class Batcher(Generic[Item, R]):
    """Items submitted while a batch runs go together in the next one; ``run`` returns
    one outcome per item, an exception for an item that failed alone. Batches hold at
    most ``max_weight`` (by ``weight``) unless one item weighs more on its own. An item
    whose caller gave up before its batch started is not run."""

    def __init__(
        self,
        run: Callable[[Sequence[Item]], Awaitable[Sequence[R | Exception]]],
        *,
        weight: Callable[[Item], int] = lambda _item: 1,
        max_weight: int = 256,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self._weight = weight
        self._max_weight = max_weight
        self._pending: list[tuple[Item, asyncio.Future[R]]] = []
        self._drains = _Drains(concurrency)
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._drains.start(self._drain_pending)
        return await future

    async def _drain_pending(self) -> None:
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

    async def _answer(self, batch: list[tuple[Item, asyncio.Future[R]]]) -> None:
        batch = [(item, future) for item, future in batch if not future.done()]
        if not batch:
            return  # every caller gave up
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


class _Drains:
    """The tasks taking batches off a queue: a new one starts for a new call while fewer
    than ``concurrency`` run, so rare calls never wait for each other."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()

    def start(self, drain: Callable[[], Coroutine[None, None, None]]) -> None:
        # A drain that found the queue empty has ended, but its done callback (which
        # forgets it) runs only at the loop's next turn: counted as running, it would
        # leave this call in the queue with no drain to take it, for ever.
        self._running = {task for task in self._running if not task.done()}
        if len(self._running) >= self._concurrency:
            return  # a running drain takes the call with its next batch
        task = asyncio.create_task(drain(), name="coalesce")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
