"""How tasks leave a ``TaskBook`` other than by a worker's report that ends them: a
deadline that passed, a lease that expired, a failed attempt retried or buried (dead),
and cancels.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from actors.pipeline.book_state import BookState
from actors.pipeline.model import AttemptRecord, Status, Task
from actors.pipeline.retry import RetryOverride


class BookEndings(BookState):
    """The endings part of ``TaskBook``: its time and its cancels."""

    # -- time ---------------------------------------------------------------------------

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
    def has_unwritten_timers(self) -> bool:
        return bool(self._unwritten_timers)

    # -- cancels ------------------------------------------------------------------------

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
