"""TaskBook: the pure state machine at the centre of a pipeline grain.

It holds a bounded window of ready tasks, the leases in flight and the changes not yet
flushed, and answers polls, heartbeats, reports, cancels and lease expiry. It does no
I/O and reads no clock: ``PipelineCore`` (``core.py``) passes in the time (monotonic for
lease deadlines, wall for timestamps) and does the durable writes the book asks for.

Its state and the steps all its parts take are ``BookState`` (``book_state.py``); what a
flush writes is ``book_flush.py``, how tasks end other than by a report (deadlines,
lease expiry, retries, cancels) ``book_endings.py``; the window, polls, heartbeats and
reports are here.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from actors.pipeline.book_endings import BookEndings
from actors.pipeline.book_flush import BookFlushing
from actors.pipeline.book_state import Lease
from actors.pipeline.model import (
    TERMINAL,
    Grant,
    LeaseToken,
    Outcome,
    Report,
    ReportAck,
    Status,
    Task,
    Verdict,
)
from actors.pipeline.timers import Taken, TimerKey

_OUTCOME_STATUS = {
    Outcome.SUCCEEDED: Status.SUCCEEDED,
    Outcome.FAILED: Status.FAILED,
    Outcome.CANCELLED: Status.CANCELLED,
}
#: How many finished grants are remembered to answer a repeated report with its first ack.
_RECENT_FINISHED = 100_000


def _grant(token: LeaseToken) -> int:
    """A finished grant as it is remembered: its epoch and attempt in one int (its task
    id is the key). 100,000 of them took 19 MB as tokens, 9 MB as ints."""
    return (token.epoch << 32) | token.attempt


class TaskBook(BookFlushing, BookEndings):
    """The book: its state (``BookState``), what a flush writes (``BookFlushing``), how
    tasks end other than by a report (``BookEndings``), and here the window, polls,
    heartbeats and reports that join them."""

    # -- loading -------------------------------------------------------------------------

    def load_counts(self, counts: dict[Status, int]) -> None:
        self.counts = Counter(counts)
        self.stored_backlog = counts.get(Status.QUEUED, 0)

    def restore_leases(self, tasks: Iterable[Task], *, now: float) -> None:
        """Take over leases granted by an earlier incarnation, each with a fresh timeout."""
        for task in tasks:
            token = LeaseToken(task_id=task.id, attempt=task.attempt, epoch=task.lease_epoch or 0)
            self._leases[task.id] = Lease(
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
        self._leases[task.id] = Lease(
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
            return ReportAck.DUPLICATE if first == _grant(token) else ReportAck.STALE
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

    def _remember_finished(self, token: LeaseToken) -> None:
        self._finished[token.task_id] = _grant(token)
        if len(self._finished) > _RECENT_FINISHED:
            self._finished.popitem(last=False)

    # -- idle and quiescent -------------------------------------------------------------

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

    # -- what the store changed ---------------------------------------------------------

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

    # -- what the book holds ------------------------------------------------------------

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
