"""TaskBook: the pure state machine at the centre of a pipeline grain.

It holds a bounded window of ready tasks, the leases in flight and the changes not yet
flushed, and answers polls, heartbeats, reports, cancels and lease expiry. It does no
I/O and reads no clock: ``PipelineCore`` (``core.py``) passes in the time (monotonic for
lease deadlines, wall for timestamps) and does the durable writes the book asks for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from actors.pipeline.holding import Held, Holding
from actors.pipeline.model import (
    TERMINAL,
    AttemptRecord,
    Grant,
    LeaseToken,
    Outcome,
    PipelineConfig,
    Report,
    ReportAck,
    Status,
    Task,
    TaskChange,
    Verdict,
)
from actors.pipeline.retry import RetryOverride
from actors.pipeline.timers import Taken, TimerHeap, TimerKey

_OUTCOME_STATUS = {
    Outcome.SUCCEEDED: Status.SUCCEEDED,
    Outcome.FAILED: Status.FAILED,
    Outcome.CANCELLED: Status.CANCELLED,
}
#: How many finished grants are remembered to answer a repeated report with its first ack.
_RECENT_FINISHED = 100_000


@dataclass(kw_only=True)
class _Lease:
    task: Task
    token: LeaseToken
    deadline: float
    cancel_requested: bool = False


@dataclass(frozen=True, kw_only=True)
class Flush:
    """What one flush must write, taken from the book; given back if the write fails."""

    changes: tuple[TaskChange, ...]
    results: tuple[tuple[str, int, bytes], ...]
    #: Attempts that ended without ending their task (kept as history).
    attempts: tuple[AttemptRecord, ...] = ()
    #: The next offset per partition, once this flush is durable (design D2).
    offsets: Mapping[int, int] = field(default_factory=dict)
    #: The held batches this flush writes the last tasks of (their offsets are above).
    released: tuple[Held, ...] = ()

    def __bool__(self) -> bool:
        """Something to write. A flush may release held batches and write nothing: their
        tasks were all stored before, and they have no offsets (the shared topic's)."""
        return bool(self.changes or self.results or self.attempts or self.offsets)


@dataclass(kw_only=True)
class TaskBook:
    config: PipelineConfig
    epoch: int
    counts: Counter[Status] = field(default_factory=Counter)
    #: Monotonic totals for metrics: admitted, dispatched, retried, dead, ...
    totals: Counter[str] = field(default_factory=Counter)
    #: Queued tasks that are in the store but not in the window.
    stored_backlog: int = 0
    #: Paging cursor over the store's queued tasks (ordered by id).
    page_after: str = ""
    #: Tasks not due yet (the soonest of them; the store keeps the rest).
    timers: TimerHeap = field(init=False)
    _ready: OrderedDict[str, Task] = field(default_factory=OrderedDict)
    _ready_bytes: int = 0
    #: Ready tasks with a deadline (``expires_at``): the sweep and ``tickless`` look at
    #: the window only when there are any.
    _ready_deadlines: int = 0
    _leases: dict[str, _Lease] = field(default_factory=dict)
    _dirty: dict[str, TaskChange] = field(default_factory=dict)
    _results: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _finished: OrderedDict[str, LeaseToken] = field(default_factory=OrderedDict)
    #: Retries whose timer the heap did not keep and whose row is not written yet: the
    #: heap must not read further from the store until they are (``timers.py``).
    _unwritten_timers: set[str] = field(default_factory=set)
    _attempts: list[AttemptRecord] = field(default_factory=list)
    #: Admitted batches, in order, whose offsets wait for their tasks' first writes (D2).
    _holding: Holding = field(default_factory=Holding)
    #: Leases of stored tasks not written yet, by task id, at the monotonic time of their
    #: grant, oldest first (D2: a change is written once older than the write delay; a
    #: task that ends sooner is updated once, at its end).
    _unwritten_leases: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timers = TimerHeap(capacity=self.config.timer_heap)

    # -- loading -------------------------------------------------------------------------

    def load_counts(self, counts: dict[Status, int]) -> None:
        self.counts = Counter(counts)
        self.stored_backlog = counts.get(Status.QUEUED, 0)

    def restore_leases(self, tasks: Iterable[Task], *, now: float) -> None:
        """Take over leases granted by an earlier incarnation, each with a fresh timeout."""
        for task in tasks:
            token = LeaseToken(task_id=task.id, attempt=task.attempt, epoch=task.lease_epoch or 0)
            self._leases[task.id] = _Lease(
                task=task, token=token, deadline=now + self.config.lease_timeout_s
            )

    # -- the window --------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    @property
    def leased_count(self) -> int:
        return len(self._leases)

    def window_room(self) -> int:
        """How many tasks the window can take before it is full."""
        if self._ready_bytes >= self.config.window_bytes:
            return 0
        return max(0, self.config.window_tasks - len(self._ready))

    def window_bytes_room(self) -> int:
        """How many bytes of tasks the window can take before it is full."""
        return max(0, self.config.window_bytes - self._ready_bytes)

    def wants_page(self) -> bool:
        """True when the window is below half and the store holds more queued tasks."""
        return self.stored_backlog > 0 and len(self._ready) < self.config.window_tasks // 2

    def known(self, task_id: str) -> bool:
        """Whether the book holds a newer state of the task than the store may show."""
        return task_id in self._ready or task_id in self._leases or task_id in self._dirty

    def admit(self, tasks: Sequence[Task]) -> None:
        """Newly admitted (durable) tasks: due ones queued, into the window while it has
        room; the others (``scheduled``) to the timers, never the window."""
        due = [task for task in tasks if task.status is not Status.SCHEDULED]
        self.counts[Status.QUEUED] += len(due)
        self.counts[Status.SCHEDULED] += len(tasks) - len(due)
        self.totals["admitted"] += len(tasks)
        for task in tasks:
            if task.status is Status.SCHEDULED:
                self.timers.offer(task.id, task.due_at, task)
        overflow = self._fill(due)
        self.stored_backlog += len(overflow)

    def hold(
        self,
        tasks: Sequence[Task],
        offsets: Mapping[int, int],
        *,
        now: float,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        """Admitted records whose offsets wait for a flush (the write delay, design D2):
        ``tasks`` (``unwritten``, already admitted) are written by the flush after they end
        or after ``config.write_delay_s``, whichever comes first, and ``offsets`` are stored
        with the flush that writes the last of them and of every batch held before, which
        then calls ``on_written`` (``released``)."""
        self.totals["held"] += len(tasks)
        self._holding.hold(tasks, offsets, now=now, on_written=on_written)

    def held_task(self, task_id: str) -> Task | None:
        """The task of this id admitted and held in memory, with no row yet (D2)."""
        return self._holding.task(task_id)

    @property
    def holding(self) -> bool:
        """Offsets wait to be stored (with tasks not written yet, or after them)."""
        return bool(self._holding)

    # -- timers -------------------------------------------------------------------------

    def take_due(self, *, wall: dt.datetime) -> list[Taken]:
        """Timers due at ``wall``, as many as the window has room for, soonest first.

        They leave the heap now, with their tasks where the heap kept them; the core reads
        the others' rows and hands every task to ``fired``, or gives the timers back with
        ``timers.put_back`` if that fails.
        """
        room = self.window_room()
        return self.timers.pop_due(wall=wall, limit=room) if room > 0 else []

    def fired(self, fired: Sequence[tuple[TimerKey, Task]]) -> None:
        """Due timers' tasks join the window, queued. Nothing is written: the task's row
        and timer row stay as they are (``scheduled``) until its next state is flushed,
        and that flush ends the timer row; a crash before it fires the timer again.

        A task the window cannot take (its bytes) goes back to the timers, not to the
        stored backlog: the store does not show it queued.
        """
        tasks = []
        for key, task in fired:
            task.status, task.timer = Status.QUEUED, key
            tasks.append(task)
        self._move(Status.SCHEDULED, Status.QUEUED, len(tasks))
        self.totals["fired"] += len(tasks)
        overflow = self._fill(tasks)
        for task in overflow:
            task.status = Status.SCHEDULED
        self._move(Status.QUEUED, Status.SCHEDULED, len(overflow))
        self.totals["fired"] -= len(overflow)
        self.timers.put_back([(task.timer, task) for task in overflow if task.timer])

    def page_in(self, tasks: Sequence[Task], *, exhausted: bool) -> None:
        """Queued tasks read from the store in id order after ``page_after``."""
        fresh = [task for task in tasks if not self.known(task.id)]
        overflow = self._fill(fresh)
        self.stored_backlog = max(0, self.stored_backlog - (len(fresh) - len(overflow)))
        if tasks:
            self.page_after = tasks[-1].id
        if exhausted:
            if not tasks and not self.page_after:
                self.stored_backlog = 0  # a full pass found nothing more: the estimate was high
            self.page_after = ""

    def _fill(self, tasks: Sequence[Task]) -> list[Task]:
        overflow: list[Task] = []
        for task in tasks:
            if self.window_room() > 0:
                self._ready[task.id] = task
                self._ready_bytes += task.size
                self._ready_deadlines += task.expires_at is not None
            else:
                overflow.append(task)
        return overflow

    def _take_ready(self, task_id: str) -> Task:
        task = self._ready.pop(task_id)
        self._ready_bytes -= task.size
        self._ready_deadlines -= task.expires_at is not None
        return task

    # -- polls, heartbeats, reports -----------------------------------------------------

    def lease(
        self, *, worker: str, max_tasks: int, max_bytes: int, now: float, wall: dt.datetime
    ) -> list[Grant]:
        """Grant up to ``max_tasks`` due tasks within ``max_bytes`` (at least one if any)."""
        grants: list[Grant] = []
        size = 0
        # From the front of the window, each task taken as it is looked at: a poll costs
        # the tasks it takes, not a copy of the window (2,000 by default).
        while self._ready and len(grants) < max_tasks:
            task_id, task = next(iter(self._ready.items()))
            if task.expired(wall):
                self._end_overdue(self._take_ready(task_id), wall=wall, was=Status.QUEUED)
                continue
            if grants and size + task.size > max_bytes:
                break
            size += task.size
            grants.append(self._grant(self._take_ready(task_id), worker=worker, now=now, wall=wall))
        return grants

    def _grant(self, task: Task, *, worker: str, now: float, wall: dt.datetime) -> Grant:
        task.status, task.started_at, task.worker = Status.LEASED, wall, worker
        task.lease_epoch = self.epoch
        token = LeaseToken(task_id=task.id, attempt=task.attempt, epoch=self.epoch)
        self._leases[task.id] = _Lease(
            task=task, token=token, deadline=now + self.config.lease_timeout_s
        )
        self._move(Status.QUEUED, Status.LEASED)
        self.totals["dispatched"] += 1
        if task.unwritten:
            pass  # written when it ends or is pinned
        elif self.config.write_delay_s > 0:
            self._unwritten_leases.pop(task.id, None)  # a second grant goes to the end
            self._unwritten_leases[task.id] = now
        else:
            self._mark(task)
        timeout_s = task.execution_timeout_s or self.config.execution_timeout_s
        return Grant(token=token, task=task, execution_timeout_s=timeout_s)

    def heartbeat(self, tokens: Sequence[LeaseToken], *, now: float) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for token in tokens:
            lease = self._leases.get(token.task_id)
            if lease is None or lease.token != token:
                verdicts.append(Verdict.LEASE_LOST)
                continue
            lease.deadline = now + self.config.lease_timeout_s
            verdicts.append(Verdict.CANCELLED if lease.cancel_requested else Verdict.OK)
        return verdicts

    def report(self, report: Report, *, wall: dt.datetime) -> ReportAck:
        """Apply a worker's report. An accepted report is durable only after the next flush."""
        token = report.token
        lease = self._leases.get(token.task_id)
        if lease is None or lease.token != token:
            first = self._finished.get(token.task_id)
            return ReportAck.DUPLICATE if first == token else ReportAck.STALE
        del self._leases[token.task_id]
        self._unwritten_leases.pop(token.task_id, None)  # its end is written instead
        task = lease.task
        status = _OUTCOME_STATUS[report.outcome]
        if lease.cancel_requested and status is not Status.SUCCEEDED:
            status = Status.CANCELLED
        self._remember_finished(token)
        error = report.error or None
        if status is Status.FAILED and not report.non_retryable:
            # A failure the worker did not call final (a timeout included): another
            # attempt, or dead at the last.
            self._retry_or_bury(
                task,
                wall=wall,
                error=error or "the worker reported a failure",
                outcome="timed_out" if report.timed_out else "failed",
            )
            return ReportAck.ACCEPTED
        self._finish(task, status, wall=wall, error=error)
        self._move(Status.LEASED, status)
        if report.result or status is Status.SUCCEEDED:
            self._results[task.id] = (task.attempt, report.result)
        return ReportAck.ACCEPTED

    def _finish(self, task: Task, status: Status, *, wall: dt.datetime, error: str | None) -> None:
        task.status, task.finished_at, task.error = status, wall, error
        self.totals[status.value] += 1
        self._mark(task)

    def _remember_finished(self, token: LeaseToken) -> None:
        self._finished[token.task_id] = token
        if len(self._finished) > _RECENT_FINISHED:
            self._finished.popitem(last=False)

    # -- time and cancels ---------------------------------------------------------------

    def end_overdue(self, *, wall: dt.datetime) -> int:
        """Ready tasks whose deadline passed end ``expired``; they are never handed out.

        Tasks beyond the window meet the same end when they reach it.
        """
        if not self._ready_deadlines:
            return 0  # no ready task has a deadline: nothing to scan the window for
        overdue = [task_id for task_id, task in self._ready.items() if task.expired(wall)]
        for task_id in overdue:
            self._end_overdue(self._take_ready(task_id), wall=wall, was=Status.QUEUED)
        return len(overdue)

    def _end_overdue(self, task: Task, *, wall: dt.datetime, was: Status) -> None:
        deadline = task.expires_at.isoformat() if task.expires_at else "its deadline"
        error = f"the deadline {deadline} passed before attempt {task.attempt} started"
        self._finish(task, Status.EXPIRED, wall=wall, error=error)
        self._move(was, Status.EXPIRED)

    def next_deadline(self) -> float | None:
        return min((lease.deadline for lease in self._leases.values()), default=None)

    def expire(self, *, now: float, wall: dt.datetime) -> list[Task]:
        """Leases past their deadline: requeued with attempt + 1, or dead after the last."""
        expired = [lease for lease in self._leases.values() if lease.deadline <= now]
        for lease in expired:
            del self._leases[lease.task.id]
            task = lease.task
            if lease.cancel_requested:
                self._finish(task, Status.CANCELLED, wall=wall, error="cancelled; lease expired")
                self._move(Status.LEASED, Status.CANCELLED)
            else:
                error = f"lease expired on attempt {task.attempt} (the worker went silent)"
                self._retry_or_bury(task, wall=wall, error=error, outcome="lease_lost")
        return [lease.task for lease in expired]

    def _retry_or_bury(self, task: Task, *, wall: dt.datetime, error: str, outcome: str) -> None:
        """A failed or lost attempt: the next one after the backoff, or dead after the last.

        The next attempt is a timer like a delayed task's (``scheduled``, ``attempt + 1``,
        a new due time), written with the next flush; the error stays visible meanwhile.
        """
        own = task.retry or RetryOverride()
        limit = own.max_attempts or self.config.max_attempts
        backoff = own.backoff or self.config.backoff
        if task.attempt >= limit:
            self._finish(
                task, Status.DEAD, wall=wall, error=f"attempt {task.attempt} of {limit}: {error}"
            )
            self._move(Status.LEASED, Status.DEAD)
            return
        pause = backoff.delay_s(failed_attempt=task.attempt, task_id=task.id)
        if task.expired(wall + dt.timedelta(seconds=pause)):
            # The next attempt could not start before the deadline: end here, keeping why.
            self._finish(
                task,
                Status.EXPIRED,
                wall=wall,
                error=f"{error}; no attempt left before the deadline",
            )
            self._move(Status.LEASED, Status.EXPIRED)
            return
        self._attempts.append(
            AttemptRecord(
                task_id=task.id,
                attempt=task.attempt,
                worker=task.worker,
                started_at=task.started_at,
                ended_at=wall,
                outcome=outcome,
                error=error,
                expire_at=wall + dt.timedelta(seconds=self.config.retention_s),
            )
        )
        task.attempt += 1
        task.due_at = wall + dt.timedelta(seconds=pause)
        task.status, task.error = Status.SCHEDULED, error
        task.worker, task.started_at, task.lease_epoch, task.ready_at = None, None, None, None
        self._move(Status.LEASED, Status.SCHEDULED)
        self.totals["retried"] += 1
        self._mark(task)
        if not self.timers.offer(task.id, task.due_at, task):
            self._unwritten_timers.add(task.id)

    @property
    def tickless(self) -> bool:
        """Nothing in the book waits for time to pass or for a write; ready tasks may wait
        for a worker, which comes as a message (a poll).

        - no lease: nothing to expire (``expire``), and none waiting for the write delay
          (``leases_due``), which a flush at the fast pace then writes;
        - no ready task with a deadline: nothing to sweep (``end_overdue``);
        - the window at least half full, or nothing more in the store: nothing to page in
          (``wants_page``); a poll that takes tasks leaves a lease, which ends this;
        - no refill of the timer heap wanted: firing needs no tick (the actor arms a
          one-shot timer at the soonest due time);
        - no change, result or attempt waiting for a flush (a retry's unwritten timer is
          one of them), and no admitted batch whose offsets wait for a flush (D2).

        A pipeline with a backlog and no worker yet (its Deployment scaled to zero) is
        tickless: a replica holding thousands of them ticks each slowly.
        """
        return not (
            self._leases
            or self.wants_page()
            or self.timers.wants_refill()
            or self.dirty
            or self._unwritten_timers
            or self._ready_deadlines
            or self._holding
        )

    @property
    def quiescent(self) -> bool:
        """Tickless, and no task to hand out at all: an empty window and no queued task in
        the store beyond it. Only a call from outside (an admission, a cancel, a requeue)
        or a timer coming due can end it. ``PipelineCore.quiescent`` adds what the core
        holds around the book.
        """
        return not (self._ready or self.stored_backlog) and self.tickless

    @property
    def has_unwritten_timers(self) -> bool:
        return bool(self._unwritten_timers)

    def cancel(self, task_ids: Iterable[str], *, wall: dt.datetime) -> list[str]:
        """Cancel tasks the book holds; return the ids it does not hold (for the store)."""
        elsewhere: list[str] = []
        for task_id in task_ids:
            if task_id in self._ready:
                task = self._take_ready(task_id)
                self._finish(task, Status.CANCELLED, wall=wall, error="cancelled")
                self._move(Status.QUEUED, Status.CANCELLED)
            elif task_id in self._leases:
                self._leases[task_id].cancel_requested = True
            elif self._cancel_unwritten_retry(task_id, wall=wall):
                pass
            elif task_id in self.timers:
                self.timers.remove(task_id)
                elsewhere.append(task_id)  # its row and timer row are the store's to end
            elif task_id not in self._dirty:
                elsewhere.append(task_id)
        return elsewhere

    def _cancel_unwritten_retry(self, task_id: str, *, wall: dt.datetime) -> bool:
        """A retry made since the last flush is only in memory (its row still says leased,
        so the store could not cancel it): end it here, in the same pending change."""
        pending = self._dirty.get(task_id)
        if pending is None or pending.status is not Status.SCHEDULED:
            return False
        self.timers.remove(task_id)
        self._unwritten_timers.discard(task_id)
        self._dirty[task_id] = dataclasses.replace(
            pending,
            status=Status.CANCELLED,
            error="cancelled",
            finished_at=wall,
            expire_at=wall + dt.timedelta(seconds=self.config.retention_s),
        )
        self._move(Status.SCHEDULED, Status.CANCELLED)
        self.totals["cancelled"] += 1
        return True

    def requeued_from_store(self, tasks: Sequence[Task]) -> None:
        """Dead tasks the store put back in the queue with a fresh attempt count."""
        self._move(Status.DEAD, Status.QUEUED, len(tasks))
        self.totals["requeued"] += len(tasks)
        self.stored_backlog += len(self._fill(tasks))

    def purged_from_store(self, count: int) -> None:
        """Dead tasks the store deleted at a tenant's request: no longer counted."""
        self.counts[Status.DEAD] -= count
        self.totals["purged"] += count

    def cancelled_in_store(self, counts: Mapping[Status, int]) -> None:
        """Tasks the book did not hold (queued beyond the window, scheduled) that the
        store cancelled, by the status each had."""
        for status, count in counts.items():
            self._move(status, Status.CANCELLED, count)
            self.totals["cancelled"] += count
            if status is Status.QUEUED:
                self.stored_backlog = max(0, self.stored_backlog - count)

    # -- flushing ----------------------------------------------------------------------

    def _mark(self, task: Task) -> None:
        self._dirty[task.id] = TaskChange.of(task, retention_s=self.config.retention_s)

    def _move(self, old: Status, new: Status, count: int = 1) -> None:
        self.counts[old] -= count
        self.counts[new] += count

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._results or self._attempts)

    def take_flush(self, *, now: float = math.inf) -> Flush:
        """What the next flush writes: every change, and tasks held past the write delay
        at monotonic ``now`` (every held task when no time is given: a grain going away);
        with the offsets of the held batches whose tasks are then all written."""
        offsets: dict[int, int] = {}
        released: tuple[Held, ...] = ()
        if self._unwritten_leases:
            self._mark_old_leases(now)
        if self._holding:
            # Held past the delay: written as they are now, queued or leased ("pinned").
            for task in self._holding.due(now=now, delay_s=self.config.write_delay_s):
                if task.id not in self._dirty:
                    self._mark(task)
            inserted = {c.id for c in self._dirty.values() if c.insert is not None}
            offsets, released = self._holding.releasable(inserted)
        flush = Flush(
            changes=tuple(self._dirty.values()),
            results=tuple((tid, attempt, res) for tid, (attempt, res) in self._results.items()),
            attempts=tuple(self._attempts),
            offsets=offsets,
            released=released,
        )
        self._dirty, self._results, self._attempts = {}, {}, []
        self._unwritten_timers.clear()  # written by this flush (or given back if it fails)
        return flush

    def _mark_old_leases(self, now: float) -> None:
        """Leases of stored tasks granted ``write_delay_s`` or longer before ``now`` join
        the flush (a crash before it runs those tasks again: at-least-once)."""
        delay = self.config.write_delay_s
        # From the front (the oldest grant), each taken as it is looked at: a flush costs
        # the leases it writes, not a copy of every lease in flight.
        while self._unwritten_leases:
            task_id, granted = next(iter(self._unwritten_leases.items()))
            if granted + delay > now:
                return
            del self._unwritten_leases[task_id]
            lease = self._leases.get(task_id)
            if lease is not None and task_id not in self._dirty:
                self._mark(lease.task)

    @property
    def unwritten_leases(self) -> bool:
        return bool(self._unwritten_leases)

    def leases_due(self, *, now: float) -> bool:
        """Some lease of a stored task is due to be written at monotonic ``now`` (granted
        ``write_delay_s`` or longer before it). The oldest grant comes first: it alone
        tells, so a grain whose leases are all younger is not flushed for them."""
        oldest = next(iter(self._unwritten_leases.values()), None)
        return oldest is not None and oldest + self.config.write_delay_s <= now

    def flushed(self, flush: Flush) -> None:
        """A flush is durable: the timer rows it ended are no longer the tasks' to end,
        the tasks it inserted have rows, and the batches it released are done with."""
        for change in flush.changes:
            if change.insert is not None:
                change.insert.unwritten = False
                if self._holding.written(change.id):
                    ended = change.status in TERMINAL
                    self.totals["written_once" if ended else "pinned"] += 1
            if change.ended_timer is None:
                continue
            lease = self._leases.get(change.id)
            task = lease.task if lease else self._ready.get(change.id)
            task = task or self.timers.payload(change.id)
            if task is not None and task.timer == change.timer:
                task.timer = None
        self._holding.release(flush.released)

    def restore_flush(self, flush: Flush) -> None:
        """Give back a flush that failed; changes made since then stay newer."""
        for change in flush.changes:
            self._dirty.setdefault(change.id, change)
            if change.status is Status.SCHEDULED and change.id not in self.timers:
                self._unwritten_timers.add(change.id)
        for task_id, attempt, result in flush.results:
            self._results.setdefault(task_id, (attempt, result))
        self._attempts[:0] = flush.attempts

    def stats(self) -> dict[str, int]:
        out = {status.value: self.counts.get(status, 0) for status in Status}
        out["backlog"] = out[Status.QUEUED.value]
        return out

    def is_live(self, task_id: str) -> bool:
        """Whether the book holds the task as not ended (ready, leased, timed or retrying)."""
        if task_id in self._ready or task_id in self._leases or task_id in self.timers:
            return True
        change = self._dirty.get(task_id)
        return change is not None and change.status not in TERMINAL

    def is_terminal(self, task_id: str) -> bool:
        change = self._dirty.get(task_id)
        return change is not None and change.status in TERMINAL
