"""PipelineActor: the mailbox that serialises calls into a pipeline's ``PipelineCore``.

The actor runtime guarantees one message at a time, so the core needs no locks. Polls
and reports answer with futures that the caller (a ``GrainHandle``, outside the actor)
awaits outside the mailbox, so a long poll or a report waiting for its flush never blocks
other messages. See ``core.py`` for how the layers of a grain fit together.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from actors.actor import Actor, ActorContext, GrainId
from actors.clock import Cancellable
from actors.pipeline.core import GrainClock, PipelineCore
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
)
from actors.pipeline.pace import Pace
from actors.pipeline.ports import EventSink, StaleEpoch, StoreUnavailable, TaskStore

log = logging.getLogger("wsched.actors.pipeline")

KIND = "pipeline"
R = TypeVar("R")


def grain_id(key: GrainKey) -> GrainId:
    """The runtime's (string-keyed) name of a pipeline grain; ``GrainKey.parse`` undoes it."""
    return GrainId(kind=KIND, key=str(key))


@dataclass(frozen=True, kw_only=True)
class Activate:
    """Answered with the offsets to resume forwarding from."""


@dataclass(frozen=True, kw_only=True)
class Admit:
    """Answered with an ``AdmitResult`` once the batch is durable and applied."""

    batch: AdmitBatch


@dataclass(frozen=True, kw_only=True)
class Poll:
    worker: str
    max_tasks: int
    max_bytes: int


@dataclass(frozen=True, kw_only=True)
class Withdraw:
    future: asyncio.Future[list[Grant]]


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    tokens: Sequence[LeaseToken]


@dataclass(frozen=True, kw_only=True)
class ReportBatch:
    reports: Sequence[Report]


@dataclass(frozen=True, kw_only=True)
class Stats:
    pass


@dataclass(frozen=True, kw_only=True)
class SyncSchedules:
    """The stored versions of the pipeline's schedules, read by the replica for all its
    grains at once: the grain loads those that differ from its own (a lost record)."""

    stored: Mapping[str, int]


class _Tick:
    pass


class _Flush:
    pass


class _Timer:
    """The soonest timer is due: a tick at that moment, not at the next periodic one."""


class _Rest:
    """Quiescent for long enough, holding timers or schedules: write the wake-up, then
    deactivate."""


TICK, FLUSH, TIMER, REST = _Tick(), _Flush(), _Timer(), _Rest()
#: The messages after which the grain publishes a snapshot; polls, heartbeats and
#: reports are the hot path and show up at the next tick or flush instead.
_PUBLISHED_AFTER = (Admit, SyncSchedules, _Tick, _Flush, _Timer)
#: What a grain lets through between the transactions of a large admission (a backlog of
#: tasks due later being admitted must not hold back the tasks due now, nor the workers
#: running them): polls, reports and what makes them durable. Ticks and timers wait: the
#: admission fires due timers itself before each transaction.
_BETWEEN_CHUNKS = (Poll, Withdraw, Heartbeat, ReportBatch, Stats, _Flush)
#: Messages the actor sends itself: a failure is logged, nobody waits for a reply.
_OWN = (_Tick, _Flush, _Timer, _Rest)


@dataclass(frozen=True, kw_only=True)
class Timing:
    tick_s: float = 0.5
    #: The periodic flush of lease state and counters (the seed's "every few seconds").
    flush_s: float = 2.0
    #: How long a report waits for others to share its flush (group commit).
    report_linger_s: float = 0.005
    #: The tick of a grain with nothing to do (``pace.py``); it flushes nothing, as it has
    #: nothing to write, and still notices a schedule change whose record was lost.
    idle_tick_s: float = 10.0
    #: How long a grain has nothing to do before it ticks at ``idle_tick_s``.
    idle_after_s: float = 5.0
    #: How long a grain stays quiescent before it deactivates (its replica keeps reading
    #: its topic, and the next record or report activates it again); None: never.
    deactivate_after_s: float | None = None
    #: A grain holding timers or schedules rests (deactivates with a wake-up) only if its
    #: soonest is further off than ``deactivate_after_s``; it is woken this much before
    #: it (and the pipeline's ``lead_s``): the wake-up index's scan period, and an
    #: activation's time in a herd.
    wake_margin_s: float = 60.0
    #: How often a grain compares its schedules' versions with the store (a lost
    #: ``ScheduleChanged`` record); None: its replica does it for all its grains.
    schedule_resync_s: float | None = 30.0


class ConfigSource(Protocol):
    async def pipeline_config(self, pipeline_id: str) -> PipelineConfig | None: ...


class UnknownPipeline(LookupError):
    pass


@dataclass(frozen=True, kw_only=True)
class Failed:
    """The reply to a message the grain could not carry out; ``unwrap`` raises it again."""

    error: StoreUnavailable | StaleEpoch


def unwrap(reply: R | Failed) -> R:
    if isinstance(reply, Failed):
        raise reply.error
    return reply


class PipelineActor(Actor[object, Any]):
    def __init__(
        self,
        *,
        key: GrainKey,
        context: ActorContext,
        store: TaskStore,
        configs: ConfigSource,
        owner: str,
        timing: Timing,
        snapshots: MutableMapping[GrainKey, GrainSnapshot] | None = None,
        observe_flush: Callable[[int, float], None] | None = None,
        observe_dispatch: Callable[[float], None] | None = None,
        events: EventSink | None = None,
        may_deactivate: Callable[[GrainKey], bool] | None = None,
        activations: asyncio.Semaphore | None = None,
    ) -> None:
        """``may_deactivate``: asked before an idle grain deactivates (its replica's
        scaler says no while the pipeline's workers are above their minimum);
        ``activations``: shared by a replica's grains, bounds the activations reading the
        store at once (a herd of thousands then finishes in turn, not all at the end)."""
        self._activations = activations
        self._key = key
        self._events = events
        self._may_deactivate = may_deactivate or (lambda _key: True)
        #: Where this grain publishes its snapshot, read by metrics and the scaler; shared
        #: by the host's grains, so an entry is removed only by the actor that put it there.
        self._snapshots: MutableMapping[GrainKey, GrainSnapshot] = (
            {} if snapshots is None else snapshots
        )
        self._published: GrainSnapshot | None = None
        self._observe_flush = observe_flush
        self._observe_dispatch = observe_dispatch
        self._ctx = context
        self._store = store
        self._configs = configs
        self._owner = owner
        self._timing = timing
        self._core: PipelineCore | None = None
        self._offsets: dict[int, int] = {}
        self._flush_timer: Cancellable | None = None
        self._due_timer: Cancellable | None = None
        #: When (monotonic) the armed ``_due_timer`` goes off.
        self._due_at = 0.0
        #: A ``_Rest`` is on its way: not sent again until it is handled.
        self._resting = False
        #: After a failed ``_Rest``, no new one before this (monotonic).
        self._rest_after = 0.0
        self._pace = Pace(idle_after_s=timing.idle_after_s)
        #: The periodic tick (and flush, at the fast pace) of the current pace.
        self._periodic: list[Cancellable] = []
        self._handlers = self._dispatch_table()

    @property
    def idle(self) -> bool:
        """Whether the grain ticks at the slow pace of a grain with nothing to do."""
        return self._pace.slow

    @property
    def core(self) -> PipelineCore:
        if self._core is None:
            raise RuntimeError("the pipeline core is not active")
        return self._core

    async def on_activate(self) -> None:
        if self._activations is None:
            await self._load()
            return
        async with self._activations:
            await self._load()

    async def _load(self) -> None:
        pipeline_id = self._key.pipeline_id
        config = await self._configs.pipeline_config(pipeline_id)
        if config is None:
            raise UnknownPipeline(f"pipeline {pipeline_id} does not exist or is not ready")
        clock = self._ctx.clock
        self._core = PipelineCore(
            config=config,
            key=self._key,
            owner=self._owner,
            store=self._store,
            clock=GrainClock(monotonic=clock.now, wall=clock.wall),
            observe_flush=self._observe_flush,
            observe_dispatch=self._observe_dispatch,
            events=self._events,
            schedule_resync_s=self._timing.schedule_resync_s,
            between_chunks=self._between_chunks,
        )
        self._offsets = await self._fenced(self._core.activate())
        self._publish()
        self._start_periodic()

    async def on_deactivate(self, reason: str) -> None:
        if self._core is not None:
            log.info("grain %s deactivating (%s)", self._key, reason)
            self._withdraw_snapshot()
            await self._core.deactivate()

    def _publish(self) -> None:
        if self._core is None or self._core.fenced:
            return  # a fenced grain's figures are no longer the pipeline's
        self._published = self._core.snapshot(idle=self._pace.slow)
        self._snapshots[self._key] = self._published

    def _withdraw_snapshot(self) -> None:
        # A newer incarnation may have published already: its entry is not ours to drop.
        if self._published is not None and self._snapshots.get(self._key) is self._published:
            del self._snapshots[self._key]

    async def receive(self, message: object) -> Any:
        """Expected failures (store down, fenced) come back as values, not exceptions:
        raising would count against the actor's restart budget."""
        handler = self._handlers.get(type(message))
        if handler is None:
            raise TypeError(f"pipeline grain cannot handle {type(message).__name__}")
        try:
            return await self._fenced(handler(message))
        except (StoreUnavailable, StaleEpoch) as err:
            if isinstance(message, _OWN):
                log.warning("grain %s: %s failed: %s", self._key, type(message).__name__, err)
                return None
            return Failed(error=err)
        finally:
            self._keep_pace()
            # Even a failed admission or tick may have changed the book part way.
            if isinstance(message, _PUBLISHED_AFTER):
                self._publish()
            if isinstance(message, Admit | Poll | _Tick | _Timer | _Flush):
                self._arm_due_timer()

    def _keep_pace(self) -> None:
        """Slow down once the grain has had nothing to do for a while; speed up as soon as
        it has. Checked after every message, since only a message gives it work.

        No tick is run on the spot when speeding up: the message that gave it work did
        what is urgent (an admission hands its tasks to waiting polls, and
        ``_arm_due_timer`` wakes the grain for a timer or schedule due before the next
        tick), and the first fast tick follows within ``tick_s``, as it would have for a
        grain that never slowed down.
        """
        if self._core is None or self._core.fenced:
            return
        now = self._ctx.clock.now()
        if self._pace.observe(tickless=self._core.tickless, now=now):
            pace = "slowly: nothing to do" if self._pace.slow else "fast again"
            log.debug("grain %s ticks %s", self._key, pace)
            self._start_periodic()
            self._arm_due_timer()  # at the slow pace, for a timer after the next tick too
        if self._resting or now < self._rest_after or not self._wants_rest(now):
            return
        if self._core.wake_at() is None:
            # Nothing to do for a while: a record, a report or a poll's wait for the next
            # activation bring it back; polls waiting here are answered empty.
            self._ctx.self_stop("idle")
        else:
            self._resting = True
            self._ctx.schedule(0, REST)

    def _wants_rest(self, now: float) -> bool:
        """Quiescent for ``deactivate_after_s`` at the slow pace (a tickless grain with a
        backlog stays, for its workers), its workers at their minimum, and its soonest
        timer or schedule (if any) further off than the grain would stay idle anyway."""
        after = self._timing.deactivate_after_s
        if (
            after is None
            or not self._pace.slow
            or self._pace.quiet_for(now) < after
            or self._core is None
            or not self._core.quiescent
        ):
            return False
        wake_at = self._core.wake_at()
        if wake_at is not None:
            margin = dt.timedelta(seconds=after + self._timing.wake_margin_s)
            if wake_at - self._core.clock.wall() < margin:
                return False
        return self._may_deactivate(self._key)

    async def _rest(self, _: _Rest) -> None:
        """Write the wake-up (fenced: a grain claimed elsewhere stops instead), then go.
        A failed write leaves the grain active; it tries again a slow tick later."""
        now = self._ctx.clock.now()
        self._resting = False
        self._rest_after = now + self._timing.idle_tick_s
        if not self._wants_rest(now):
            return  # a message since gave it work
        wake_at = self.core.wake_at()
        if wake_at is not None:
            wake_at -= dt.timedelta(seconds=self._timing.wake_margin_s)
            await self.core.rest(wake_at)
            log.info("grain %s resting until %s", self._key, wake_at.isoformat())
        self._resting = True  # for good: it is going
        self._ctx.self_stop("idle")

    def _start_periodic(self) -> None:
        """The timers of the current pace, in place of the previous pace's.

        The slow pace has no flush: a tickless grain has nothing to write, and whatever
        gives it something to write is a message, after which it is at the fast pace.
        """
        for timer in self._periodic:
            timer.cancel()
        if self._pace.slow:
            self._periodic = [self._ctx.every(self._timing.idle_tick_s, TICK)]
        else:
            self._periodic = [
                self._ctx.every(self._timing.tick_s, TICK),
                self._ctx.every(self._timing.flush_s, FLUSH),
            ]

    def _dispatch_table(self) -> dict[type, Callable[[Any], Awaitable[Any]]]:
        return {
            Activate: self._activate,
            Admit: self._admit,
            Poll: self._poll,
            Withdraw: self._withdraw,
            Heartbeat: self._heartbeat,
            ReportBatch: self._report,
            Stats: self._stats,
            SyncSchedules: self._sync_schedules,
            _Tick: self._tick,
            _Flush: self._flush,
            _Timer: self._timer,
            _Rest: self._rest,
        }

    async def _fenced(self, call: Awaitable[R]) -> R:
        """A grain that lost its epoch stops at once: it must not write or serve again."""
        try:
            return await call
        except StaleEpoch:
            self._ctx.self_stop("fenced")
            raise

    async def _activate(self, _: Activate) -> dict[int, int]:
        return dict(self._offsets)

    async def _admit(self, msg: Admit) -> AdmitResult:
        return await self.core.admit(msg.batch)

    async def _between_chunks(self) -> None:
        """Between two transactions of an admission: the waiting polls and reports (and
        heartbeats, flushes) are handled, then the leases and reports made durable, so
        workers keep going while a large batch is admitted."""
        await self._ctx.serve_waiting(lambda message: isinstance(message, _BETWEEN_CHUNKS))
        if self._core is not None and not self._core.fenced and self._core.book.dirty:
            # The leases granted and the reports taken, durable before the next chunk: a
            # lease not written when its replica dies is run again by the next owner.
            await self._core.flush()

    async def _poll(self, msg: Poll) -> asyncio.Future[list[Grant]]:
        return self.core.poll(worker=msg.worker, max_tasks=msg.max_tasks, max_bytes=msg.max_bytes)

    async def _withdraw(self, msg: Withdraw) -> None:
        self.core.withdraw(msg.future)

    async def _heartbeat(self, msg: Heartbeat) -> list[Any]:
        return self.core.heartbeat(msg.tokens)

    async def _report(self, msg: ReportBatch) -> tuple[list[ReportAck], asyncio.Future[None]]:
        acks, durable = self.core.report(msg.reports)
        if not durable.done() and self._flush_timer is None:
            self._flush_timer = self._ctx.schedule(self._timing.report_linger_s, FLUSH)
        return acks, durable

    async def _stats(self, _: Stats) -> dict[str, int]:
        return self.core.book.stats()

    async def _sync_schedules(self, msg: SyncSchedules) -> None:
        await self.core.schedules.check(dict(msg.stored))

    async def _tick(self, _: _Tick) -> None:
        await self.core.tick()

    async def _timer(self, _: _Timer) -> None:
        self._due_timer = None
        await self.core.tick()

    def _arm_due_timer(self) -> None:
        """Wake at the soonest timer's or schedule's due time when it comes before the
        next tick, so a due task is handed out within milliseconds, not up to a tick late.
        At the slow pace that is any due time: a grain holding only timers ticks slowly."""
        if self._core is None or self._core.fenced:
            return
        wait = self._core.next_timer_in()
        if wait is None or (wait >= self._timing.tick_s and not self._pace.slow):
            return
        if wait == 0 and self._core.book.window_room() == 0 and not self._core.schedules.due_now():
            return  # due, but the window is full: the periodic tick fires it when room frees
        due_at = self._ctx.clock.now() + wait
        if self._due_timer is not None:
            if self._due_at <= due_at:
                return  # armed for that moment or sooner
            self._due_timer.cancel()  # an earlier timer came since
        self._due_timer = self._ctx.schedule(wait, TIMER)
        self._due_at = due_at

    async def _flush(self, _: _Flush) -> None:
        self._flush_timer = None
        if self.core.wants_flush():
            await self.core.flush()
