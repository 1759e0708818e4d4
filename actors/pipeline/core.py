"""PipelineCore: one pipeline's task book plus the I/O around it.

The four layers of a pipeline grain, from the inside out:

- ``TaskBook`` (``book.py``, with its parts ``book_state.py``, ``book_flush.py`` and
  ``book_endings.py``): the pure state machine (window, leases, pending changes), no
  I/O and no clock.
- ``PipelineCore`` (this module): the book plus its store calls, its clock and the
  pollers waiting for tasks; admission (``admitting.py``), timer firing
  (``timer_firing.py``) and schedule firing (``firing.py``) are helpers around it.
- ``PipelineActor`` (``actor.py``): the mailbox that serialises calls into the core, so
  the core needs no locks.
- ``GrainHandle`` (``services/scheduler/handle.py``): how code outside the actor talks to
  it: asks into the mailbox, awaits the answers outside it.

Long polls and reports do not hold up the mailbox: the core returns a future the caller
awaits outside it, resolved when tasks arrive or the report is durable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from actors.pipeline.admitting import Admitting
from actors.pipeline.book import TaskBook
from actors.pipeline.book_flush import Flush
from actors.pipeline.events import EventBatch, StatusChange, change_of
from actors.pipeline.firing import ScheduleFiring
from actors.pipeline.model import (
    AdmitBatch,
    AdmitResult,
    GrainKey,
    GrainSnapshot,
    Grant,
    LeaseToken,
    PipelineConfig,
    Report,
    ReportAck,
    Task,
    Verdict,
)
from actors.pipeline.ports import EventSink, StaleEpoch, StoreUnavailable, TaskStore
from actors.pipeline.timer_firing import TimerFiring
from actors.pipeline.timers import TimerKey

log = logging.getLogger("wsched.actors.pipeline")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class GrainClock:
    """Monotonic seconds for lease deadlines, UTC wall time for timestamps."""

    monotonic: Callable[[], float]
    wall: Callable[[], dt.datetime]


@dataclass(kw_only=True)
class _Waiter:
    worker: str
    max_tasks: int
    max_bytes: int
    future: asyncio.Future[list[Grant]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PipelineCore:
    def __init__(
        self,
        *,
        config: PipelineConfig,
        key: GrainKey,
        owner: str,
        store: TaskStore,
        clock: GrainClock,
        observe_flush: Callable[[int, float], None] | None = None,
        observe_dispatch: Callable[[float], None] | None = None,
        events: EventSink | None = None,
        schedule_resync_s: float | None = 30.0,
        between_chunks: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """``schedule_resync_s``: how often the grain compares its schedules' versions with
        the store; None when its replica does that for all its grains. ``between_chunks``:
        awaited between two transactions of an admission taken in chunks (its actor lets
        workers' polls and reports through there)."""
        self.config = config
        self._schedule_resync_s = schedule_resync_s
        #: Told what each committed write changed (D6); None: nobody listens.
        self._events = events
        #: Changes committed but not yet published: sent at the end of the mailbox turn.
        self._unpublished: list[StatusChange] = []
        #: Called with (rows written, seconds taken) after each successful flush.
        self._observe_flush = observe_flush or (lambda _rows, _seconds: None)
        #: Called with the seconds each granted task waited since it became ready.
        self._observe_dispatch = observe_dispatch or (lambda _seconds: None)
        self.key = key
        self._owner = owner
        self._store = store
        self._clock = clock
        self.book = TaskBook(config=config, epoch=0)
        self.schedules = ScheduleFiring(self, resync_s=self._schedule_resync_s)
        self.timer_firing = TimerFiring(self)
        self._admitting = Admitting(self, between_chunks=between_chunks)
        self._waiters: deque[_Waiter] = deque()
        self._durable: list[asyncio.Future[None]] = []
        self.fenced = False
        self._written_stats: dict[str, int] | None = None

    @property
    def epoch(self) -> int:
        return self.book.epoch

    @property
    def store(self) -> TaskStore:
        return self._store

    @property
    def clock(self) -> GrainClock:
        return self._clock

    def snapshot(self, *, idle: bool = False) -> GrainSnapshot:
        """The figures readers outside the actor may see (metrics, the scaler); ``idle``:
        the actor ticks the grain at its slow pace."""
        return GrainSnapshot(
            key=self.key,
            epoch=self.epoch,
            stats=self.book.stats(),
            totals=self.book.totals,
            leased=self.book.leased_count,
            taken_at=self._clock.monotonic(),
            due_soon=self._due_soon(),
            idle=idle,
            schedule_versions=self.schedules.book.versions() if self.schedules.enabled else None,
        )

    def _due_soon(self) -> int:
        lead = self.config.lead_s
        if not lead:
            return 0
        by = self._clock.wall() + dt.timedelta(seconds=lead)
        # A schedule about to fire is backlog too: a pipeline scaled to zero gets its
        # workers started before the run exists.
        return self.book.timers.count_due(by=by) + self.schedules.book.count_due(by=by)

    # -- life cycle ---------------------------------------------------------------------

    async def activate(self) -> dict[int, int]:
        """Claim the grain (a new epoch) and load its state; return the offsets to resume."""
        activation = await self._store.activate(
            grain=self.key, owner=self._owner, timers=self.config.timer_heap
        )
        epoch, loaded = activation.epoch, activation.loaded
        self.book = TaskBook(config=self.config, epoch=epoch)
        self.book.load_counts(loaded.counts)
        self.book.restore_leases(loaded.leased, now=self._clock.monotonic())
        self.book.timers.refill(activation.timers, limit=self.config.timer_heap)
        self.schedules = ScheduleFiring(self, resync_s=self._schedule_resync_s)
        await self.schedules.load(stored=activation.schedules)
        await self.schedules.fire()
        await self.timer_firing.fire()
        await self.page_in()
        self.publish()
        log.info("grain %s activated at epoch %d: %s", self.key, epoch, self.book.stats())
        return loaded.offsets

    def wake_at(self) -> dt.datetime | None:
        """When a quiescent grain must be active again: its soonest timer or schedule fire,
        less the pipeline's ``lead_s`` (so its workers are started in time, as if it had
        stayed active); None if it holds neither, so only a message can give it work."""
        times = [t for t in (self.book.timers.next_due(), self.schedules.book.next_due()) if t]
        if not times:
            return None
        return min(times) - dt.timedelta(seconds=self.config.lead_s)

    async def rest(self, wake_at: dt.datetime) -> None:
        """Write the grain's wake-up (``TaskStore.rest``) before it deactivates with timers
        or schedules; any pending change is flushed first."""
        if self.wants_flush(everything=True):
            await self.flush(everything=True)
        await self._store.rest(grain=self.key, epoch=self.epoch, wake_at=wake_at)

    async def deactivate(self) -> None:
        """Flush what changed and fail every waiter; a new owner takes over from the store."""
        try:
            if not self.fenced:
                await self.flush(everything=True)
        finally:
            self._release_waiters()

    def _release_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result([])

    # -- admission ----------------------------------------------------------------------

    async def admit(self, batch: AdmitBatch) -> AdmitResult:
        """Make a batch of records from the topic durable, then apply it in memory.

        New tasks come in topic order; the offsets are recorded in the same transaction
        as the batch's last write, so a replay after a crash skips what was admitted.
        """
        try:
            return await self._admitting.admit(batch)
        finally:
            # Each step's changes are recorded once committed: even when a later step
            # fails, what is durable is told.
            self.publish()

    def admitted(self, tasks: Sequence[Task], *, serve: bool = True) -> None:
        """Tasks now durable (submitted, or a schedule's runs) join the book."""
        self._stamp_ready(tasks)
        self.book.admit(tasks)
        self.committed(tasks)
        if serve:
            self.serve_waiters()

    async def page_in(self) -> None:
        """Refill the window from the store's backlog when it runs low."""
        if not self.book.wants_page():
            return
        limit = self.book.window_room()
        page = await self.guard(
            self._store.page_queued(
                grain=self.key,
                after=self.book.page_after,
                limit=limit,
            )
        )
        self._stamp_ready(page)
        self.book.page_in(page, exhausted=len(page) < limit)
        self.serve_waiters()

    # -- workers ------------------------------------------------------------------------

    def poll(self, *, worker: str, max_tasks: int, max_bytes: int) -> asyncio.Future[list[Grant]]:
        """Tasks now if any are ready, else a future resolved when some arrive.

        The caller bounds its wait and then calls ``withdraw``; tasks handed to a future
        that nobody awaits any more are not lost: their leases simply expire.
        """
        waiter = _Waiter(worker=worker, max_tasks=max_tasks, max_bytes=max_bytes)
        grants = self._lease(waiter)
        if grants:
            waiter.future.set_result(grants)
        else:
            self._waiters.append(waiter)
        return waiter.future

    def withdraw(self, future: asyncio.Future[list[Grant]]) -> None:
        for waiter in self._waiters:
            if waiter.future is future:
                self._waiters.remove(waiter)
                if not future.done():
                    future.set_result([])
                return

    def _lease(self, waiter: _Waiter) -> list[Grant]:
        now = self._clock.monotonic()
        grants = self.book.lease(
            worker=waiter.worker,
            max_tasks=waiter.max_tasks,
            max_bytes=waiter.max_bytes,
            now=now,
            wall=self._clock.wall(),
        )
        for grant in grants:
            if grant.task.ready_at is not None:
                self._observe_dispatch(now - grant.task.ready_at)
        return grants

    def _stamp_ready(self, tasks: Sequence[Task]) -> None:
        now = self._clock.monotonic()
        for task in tasks:
            task.ready_at = now

    def serve_waiters(self) -> None:
        while self._waiters and self.book.ready_count:
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            grants = self._lease(waiter)
            if not grants:
                self._waiters.appendleft(waiter)  # ready tasks exist but none is due yet
                return
            waiter.future.set_result(grants)

    def heartbeat(self, tokens: Sequence[LeaseToken]) -> list[Verdict]:
        return self.book.heartbeat(tokens, now=self._clock.monotonic())

    def report(self, reports: Sequence[Report]) -> tuple[list[ReportAck], asyncio.Future[None]]:
        """Apply reports; the future resolves once they are durable (after the next flush)."""
        wall = self._clock.wall()
        acks = [self.book.report(report, wall=wall) for report in reports]
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.book.dirty:
            self._durable.append(durable)
        else:
            durable.set_result(None)
        return acks, durable

    # -- time ---------------------------------------------------------------------------

    async def tick(self) -> None:
        """Expire leases, fire due timers, refill the window, hand tasks to waiters.

        Called periodically, and by the actor at the next timer's due time."""
        try:
            await self._tick()
        finally:
            self.publish()

    async def _tick(self) -> None:
        expired = self.book.expire(now=self._clock.monotonic(), wall=self._clock.wall())
        if expired:
            log.info("grain %s: %d lease(s) expired", self.key, len(expired))
        await self.schedules.resync()
        await self.schedules.fire()
        await self.timer_firing.fire()
        await self.timer_firing.refill()
        await self.page_in()
        self.book.end_overdue(wall=self._clock.wall())
        self.serve_waiters()

    def next_timer_in(self) -> float | None:
        """Seconds until the soonest timer or schedule in memory is due (0 if it is), or None."""
        times = [t for t in (self.book.timers.next_due(), self.schedules.book.next_due()) if t]
        if not times:
            return None
        due = min(times)
        return max(0.0, (due - self._clock.wall()).total_seconds())

    def fired(self, fired: Sequence[tuple[TimerKey, Task]]) -> None:
        """Due timers' tasks (``timer_firing.py``) join the window and go to waiters."""
        self._stamp_ready([task for _, task in fired])
        self.book.fired(fired)
        self.serve_waiters()

    async def flush(self, *, everything: bool = False) -> None:
        """Write every change since the last flush in one fenced transaction, with the
        tasks held in memory past the write delay (every one of them: ``everything``, as
        the grain goes away) and the offsets that are then safe to store (design D2)."""
        waiting, self._durable = self._durable, []
        taken: Flush = self.book.take_flush(now=self._flush_time(everything=everything))
        stats = self.book.stats()
        started = self._clock.monotonic()
        try:
            # Counters change on admission alone (no task row to update): /stats must
            # still show a backlog that no worker has touched yet.
            if taken or stats != self._written_stats:
                await self._write(taken, stats)
                self._written_stats = stats
        except BaseException as err:
            if not self.fenced:
                self.book.restore_flush(taken)
            failure = err if isinstance(err, Exception) else StoreUnavailable("flush interrupted")
            for future in waiting:
                if not future.done():
                    future.set_exception(failure)
            raise
        if taken or taken.released:
            # A flush may only release held batches whose tasks earlier writes stored (a
            # shared-topic batch of timers): nothing to write, its forwarder still told.
            self.book.flushed(taken)
        if taken:
            rows = len(taken.changes) + len(taken.results)
            self._observe_flush(rows, self._clock.monotonic() - started)
            self._unpublished += [change_of(c.id, c.status, c.attempt) for c in taken.changes]
        self.publish()
        for future in waiting:
            if not future.done():
                future.set_result(None)

    async def _write(self, taken: Flush, stats: dict[str, int]) -> None:
        await self.guard(
            self._store.flush(
                grain=self.key,
                epoch=self.epoch,
                flush=taken,
                stats=stats,
                now=self._clock.wall(),
            )
        )

    def wants_flush(self, *, everything: bool = False) -> bool:
        """Whether ``flush`` (with the same ``everything``) has something to do. A lease
        younger than the write delay is not yet: a grain whose only change is one is not
        flushed each tick for it, and the first flush after it is old writes it."""
        return (
            self.book.dirty
            or self.book.holding
            or self.book.leases_due(now=self._flush_time(everything=everything))
            or bool(self._durable)
            or self.book.stats() != self._written_stats
        )

    def _flush_time(self, *, everything: bool) -> float:
        """The monotonic time a flush writes the held tasks and leases older than the write
        delay at: past every delay (``math.inf``) when everything goes, as the grain does."""
        return math.inf if everything else self._clock.monotonic()

    @property
    def tickless(self) -> bool:
        """Whether neither a tick nor a flush has anything to do until a message arrives;
        the actor then ticks the grain slowly (``Timing.idle_tick_s``).

        Each job of ``_tick`` and ``flush``, and why a tickless grain has none:

        - lease expiry, deadline sweep, page-in, timer firing and refill: the book holds
          no lease, no ready task with a deadline, no timer, and its window needs no
          page-in (``TaskBook.tickless``). Ready tasks wait for a poll, a message; the
          poll that takes them leaves leases, which end this.
        - timer and schedule firing: the actor arms a one-shot timer at the soonest due
          time (``next_timer_in``) at any pace, so neither needs the periodic tick. A
          buffered schedule run waits for its predecessor's end, which the tick looks
          at: a grain holding one is not tickless. A changed schedule comes with a
          ``ScheduleChanged`` record (an admission); the version resync, in case that
          record was lost, is the replica's (or the slow tick's).
        - the flush: no pending change (``book.dirty``), no report waiting for its flush
          (``_durable``), and the counters are those last written.
        - events: none committed and not yet published.

        Long polls waiting here do not count: tasks reach them the moment they join the
        window (``serve_waiters`` after admission, firing and page-in, all of them
        messages or work a tickless grain has not got), and their timeout is their
        caller's (``GrainHandle.poll`` withdraws), so a waiter needs no tick.
        """
        return (
            self.book.tickless
            and not self.schedules.book.buffered
            and not self._durable
            and not self._unpublished
            and self.book.stats() == self._written_stats
        )

    @property
    def quiescent(self) -> bool:
        """Tickless with no task to hand out either (``TaskBook.quiescent``): the grain
        may deactivate, since nothing but a message, or a timer or schedule coming due
        (``wake_at``, the wake-up index), can give it work."""
        return self.book.quiescent and self.tickless

    # -- live results (D6) ---------------------------------------------------------------

    def committed(self, tasks: Sequence[Task]) -> None:
        """Record the statuses of tasks a store call just made durable."""
        if self._events is not None:
            self._unpublished += [change_of(t.id, t.status, t.attempt) for t in tasks]

    def record_changes(self, changes: Sequence[StatusChange]) -> None:
        """Record changes a store call just made durable, known by id (a cancel's, a
        purge's), for the next ``publish``."""
        self._unpublished += changes

    def publish(self) -> None:
        """Tell the event sink what the committed writes since the last call changed.

        Only ever after a commit, so a waiter never reads a state the store does not
        have; the sink never blocks, so a slow broker never holds up the mailbox.
        """
        changes, self._unpublished = self._unpublished, []
        if self._events is None or not changes or self.fenced:
            return
        batch = EventBatch(
            grain=self.key,
            changes=tuple(changes),
            counts=self.book.stats(),
            at=self._clock.wall(),
        )
        try:
            self._events.publish(batch)
        except Exception:  # a lost event only delays a waiter (D6): never fail the write
            log.exception("grain %s: an event batch was not published", self.key)

    async def guard(self, call: Awaitable[R]) -> R:
        """Await a store call; on StaleEpoch drop the state so nothing more is written."""
        try:
            return await call
        except StaleEpoch:
            self.fenced = True
            self._release_waiters()
            log.warning("grain %s lost ownership at epoch %d; stopping", self.key, self.epoch)
            raise
