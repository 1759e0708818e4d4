"""One API process's live results: the waiters for tasks' ends and the SSE subscribers,
fed by one reader of ``wsched.events`` (D6).

A waiter registers before it reads its task's row, so an event cannot slip between the
read and the registration; it reads the row again only when an event names its task with
a final status: one primary-key read per change, never a poll loop per waiter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from services.live.source import Delivered, EventSource
from services.live.wire import LiveEvent

log = logging.getLogger("wsched.api.live")
T = TypeVar("T")

#: Events an SSE subscriber may fall behind by before its stream is ended (the client
#: reconnects with ``Last-Event-ID`` and catches up from Kafka, not from our memory).
SUBSCRIBER_QUEUE = 1_000
_RETRY_S = 1.0


class Waiter:
    """Woken when an event names its task with a final status."""

    def __init__(self) -> None:
        self._woken = asyncio.Event()
        #: The time (ms since the epoch) of the commit the last wake announced; 0: none.
        self.committed_at_ms = 0

    def wake(self, committed_at_ms: int = 0) -> None:
        self.committed_at_ms = committed_at_ms
        self._woken.set()

    async def woken(self, timeout_s: float) -> bool:
        """True if woken within ``timeout_s`` (and ready to be woken again), else False."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self._woken.wait()
        except TimeoutError:
            return False
        self._woken.clear()
        return True


class Subscription:
    """One SSE stream's queue of its pipeline's events."""

    def __init__(self, *, size: int = SUBSCRIBER_QUEUE) -> None:
        self._queue: asyncio.Queue[Delivered] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def put(self, delivered: Delivered) -> None:
        try:
            self._queue.put_nowait(delivered)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self, timeout_s: float) -> Delivered | None:
        """The next event, or None after ``timeout_s`` (or at once once overflowed)."""
        if self.overflowed:
            return None
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                return await self._queue.get()
        except TimeoutError:
            return None


class LiveHub:
    def __init__(self, *, observe_lag: Callable[[int], None] = lambda _at_ms: None) -> None:
        #: Called with each delivered record's commit time (ms since the epoch).
        self._observe_lag = observe_lag
        self._waiters: dict[tuple[str, str], set[Waiter]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        #: Waiters and subscribers by pipeline, by the records' key: what ``wants`` takes.
        self._watched: collections.Counter[bytes] = collections.Counter()
        #: Records delivered and waiters woken, for metrics and tests.
        self.delivered = 0
        self.woken = 0

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    @property
    def streams(self) -> int:
        """Open SSE streams (subscriptions) of this process."""
        return sum(len(s) for s in self._subscribers.values())

    def wants(self, pipeline_key: bytes) -> bool:
        """Whether a record of this pipeline (its id, the record's key) has a waiter or a
        subscriber here; the reader skips the others undecoded. A waiter registers before
        it reads its row, so a record skipped before then is already in what it reads."""
        return pipeline_key in self._watched

    @contextlib.contextmanager
    def _watching(self, pipeline_id: str) -> Iterator[None]:
        key = pipeline_id.encode()
        self._watched[key] += 1
        try:
            yield
        finally:
            self._watched[key] -= 1
            if not self._watched[key]:
                del self._watched[key]

    @contextlib.contextmanager
    def waiter(self, pipeline_id: str, task_id: str) -> Iterator[Waiter]:
        key = (pipeline_id, task_id)
        waiter = Waiter()
        self._waiters.setdefault(key, set()).add(waiter)
        try:
            with self._watching(pipeline_id):
                yield waiter
        finally:
            waiters = self._waiters[key]
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[key]

    @contextlib.contextmanager
    def subscribe(self, pipeline_id: str) -> Iterator[Subscription]:
        subscription = Subscription()
        self._subscribers.setdefault(pipeline_id, set()).add(subscription)
        try:
            with self._watching(pipeline_id):
                yield subscription
        finally:
            subscribers = self._subscribers[pipeline_id]
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[pipeline_id]

    def deliver(self, delivered: Delivered) -> None:
        """Hand one record to the waiters it names and its pipeline's subscribers."""
        self.delivered += 1
        event = delivered.event
        if event.at_ms:
            self._observe_lag(event.at_ms)
        self._wake(event)
        for subscription in self._subscribers.get(event.pipeline_id, ()):
            subscription.put(delivered)

    def _wake(self, event: LiveEvent) -> None:
        if not self._waiters:
            return
        for change in event.changes:
            if not change.final:
                continue
            for waiter in self._waiters.get((event.pipeline_id, change.task_id), ()):
                waiter.wake(event.at_ms)
                self.woken += 1

    async def run(self, source: EventSource) -> None:
        """Follow the topic until cancelled; a failed reader is restarted (from the end:
        a waiter that missed an event in between answers at its timeout)."""
        while True:
            try:
                await source.follow(self.deliver, wants=self.wants)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the reader is restarted, with a log
                log.warning("events reader: %s: %s; restarting", type(err).__name__, err)
            await asyncio.sleep(_RETRY_S)


async def wait_until_final(
    hub: LiveHub,
    *,
    pipeline_id: str,
    task_id: str,
    read: Callable[[], Awaitable[T]],
    final: Callable[[T], bool],
    timeout_s: float,
    clock: Callable[[], float],
    answered: Callable[[int], None] = lambda _at_ms: None,
) -> T:
    """Read the task; while it is not final, wait for an event naming it and read again.

    At the timeout the row is read once more, so a lost event costs a delay, never a
    wrong answer. ``answered`` gets the commit time of the event that ended the wait.
    """
    deadline = clock() + timeout_s
    with hub.waiter(pipeline_id, task_id) as waiter:
        row = await read()
        while not final(row):
            if not await waiter.woken(deadline - clock()):
                return await read()
            row = await read()
        if waiter.committed_at_ms:
            answered(waiter.committed_at_ms)
        return row
