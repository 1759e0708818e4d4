"""How a grain admits a batch of its topic's records: the I/O of an admission, around
the book (``TaskBook.admit``), as ``TimerFiring`` is for timers.

New tasks are made durable, then applied in memory; cancels, requeues and purges of the
batch follow, each a fenced write, and the offsets go with the batch's last write, so a
crash in between replays the batch (admission is idempotent). While timers wait, the new
tasks go in transactions of ``ADMIT_CHUNK`` with due timers fired before each, and
``between_chunks`` (the actor's: waiting polls and reports let through) runs between two.

With a write delay (``PipelineConfig.write_delay_s``, design D2) the tasks that are due
and fit the ready window are not written here: they are told from replays and resubmits
by a read of the stored ids, held in memory and written by a flush, at their end or once
the delay is past; the batch's offsets wait in the book (``TaskBook.hold``) until every
task before them is written. The others (due later, or beyond the window) are written
here as without a delay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from actors.pipeline.events import PURGED, change_of
from actors.pipeline.model import AdmitBatch, AdmitResult, NewTask, Purge, Status, Task
from actors.pipeline.ports import Admission

if TYPE_CHECKING:
    from actors.pipeline.core import PipelineCore

#: Tasks per admission transaction while timers wait (``Admitting._admit_new``).
ADMIT_CHUNK = 1000


class Admitting:
    def __init__(
        self, core: PipelineCore, *, between_chunks: Callable[[], Awaitable[object]] | None
    ) -> None:
        self._core = core
        self._between_chunks = between_chunks

    async def admit(self, batch: AdmitBatch) -> AdmitResult:
        core = self._core
        holding = core.config.write_delay_s > 0 and bool(batch.offsets or batch.on_written)
        # The offsets go with the batch's last write, so that a crash in between replays
        # the cancels and requeues instead of skipping them.
        later = holding or bool(batch.cancels or batch.requeues or batch.purges)
        new: Sequence[NewTask] = batch.new
        held = Admission(admitted=[])
        if holding:
            held, new = await self._hold_new(batch.new)
        admission = await self._admit_new(new, {} if later else batch.offsets)
        wall = core.clock.wall()
        core.book.end_overdue(wall=wall)
        cancelled = await self._cancel(batch.cancels, wall=wall)
        requeued = await self._requeue(batch.requeues, wall=wall)
        purged = await self._purge(batch.purges, wall=wall)
        if holding:
            # Stored (or told to the shared topic's forwarder) by the flush that has
            # written every task held before them.
            core.book.hold(
                [], batch.offsets, now=core.clock.monotonic(), on_written=batch.on_written
            )
        elif later and batch.offsets:
            await self._store_admit([], batch.offsets, wall=wall)
        if batch.schedules:
            await core.schedules.load(batch.schedules)
        core.serve_waiters()
        return AdmitResult(
            admitted=len(held.admitted) + len(admission.admitted),
            duplicates=len(held.duplicates) + len(admission.duplicates),
            conflicts=len(held.conflicts) + len(admission.conflicts),
            cancelled=cancelled,
            requeued=requeued,
            purged=purged,
            held=holding,
        )

    async def _hold_new(self, new: Sequence[NewTask]) -> tuple[Admission, list[NewTask]]:
        """Admit without a write the tasks of ``new`` that are due and fit the window; the
        rest is returned, for ``_admit_new``. An id stored already, or held in memory, is a
        duplicate (same data) or a conflict (the first submit stands), as at an insert."""
        core = self._core
        wall = core.clock.wall()
        unique: dict[str, NewTask] = {}
        for task in new:
            unique.setdefault(task.id, task)  # a resubmit inside the batch: the first stands
        duplicates: list[str] = []
        conflicts: list[str] = []
        room, room_bytes = core.book.window_room(), core.book.window_bytes_room()
        fit: list[NewTask] = []
        full = False
        for task in unique.values():
            held = core.book.held_task(task.id)
            if held is not None:  # a resubmit of a task held here: never a second one
                (duplicates if held.data_sha256 == task.data_sha256 else conflicts).append(task.id)
                continue
            size = len(task.data) + len(task.id)
            if full or task.due_at > wall:
                continue  # a timer waits anyway, and a full window pages in: written now
            if len(fit) >= room or size > room_bytes:
                full = True
                continue
            fit.append(task)
            room_bytes -= size
        stored = (
            await core.guard(
                core.store.stored_digests(grain=core.key, task_ids=[t.id for t in fit])
            )
            if fit
            else {}
        )
        admitted: list[Task] = []
        for task in fit:
            digest = stored.get(task.id)
            if digest is not None:
                (duplicates if digest == task.data_sha256 else conflicts).append(task.id)
                continue
            admitted.append(Task.admitted(task, status=Status.QUEUED, unwritten=True))
        if admitted:
            core.admitted(admitted, serve=True)
            core.book.hold(admitted, {}, now=core.clock.monotonic())
        done = {t.id for t in fit}.union(duplicates, conflicts)
        return (
            Admission(admitted=admitted, duplicates=duplicates, conflicts=conflicts),
            [t for t in new if t.id not in done],
        )

    async def _admit_new(self, new: Sequence[NewTask], offsets: Mapping[int, int]) -> Admission:
        """Admit in transactions of ``ADMIT_CHUNK`` tasks while timers wait, due timers fired
        before each: a backlog being admitted (tasks due later, most of them) must not hold
        back tasks due now. The offsets go with the last transaction; a crash in between
        replays the batch, and admission is idempotent. With no timers: one transaction.

        Between two chunks the state is whole (each chunk is applied as it commits), and
        ``between_chunks`` runs: workers need not wait for the whole batch either."""
        core = self._core
        size = ADMIT_CHUNK if len(core.book.timers) else max(len(new), 1)
        starts = range(0, len(new), size) if new else range(1)
        admitted: list[Task] = []
        duplicates: list[str] = []
        conflicts: list[str] = []
        for start in starts:
            if start and self._between_chunks is not None:
                core.publish()
                await self._between_chunks()
            await core.timer_firing.fire()
            last = start + size >= len(new)
            part = await self._store_admit(
                new[start : start + size], offsets if last else {}, wall=core.clock.wall()
            )
            core.admitted(part.admitted, serve=True)
            admitted += part.admitted
            duplicates += part.duplicates
            conflicts += part.conflicts
        return Admission(admitted=admitted, duplicates=duplicates, conflicts=conflicts)

    async def _store_admit(
        self, tasks: Sequence[NewTask], offsets: Mapping[int, int], *, wall: dt.datetime
    ) -> Admission:
        core = self._core
        return await core.guard(
            core.store.admit(
                grain=core.key,
                epoch=core.epoch,
                tasks=tasks,
                offsets=offsets,
                now=wall,
            )
        )

    async def _cancel(self, task_ids: Sequence[str], *, wall: dt.datetime) -> int:
        core = self._core
        if not task_ids:
            return 0
        before = core.book.counts[Status.CANCELLED]
        elsewhere = core.book.cancel(task_ids, wall=wall)
        if elsewhere:
            counts = await core.guard(
                core.store.cancel_waiting(
                    grain=core.key,
                    epoch=core.epoch,
                    task_ids=elsewhere,
                    now=wall,
                    retention_s=core.config.retention_s,
                )
            )
            core.book.cancelled_in_store(counts)
            if sum(counts.values()) == len(elsewhere):
                # The store says how many, not which: only when every one was cancelled
                # are the ids known (the others wait for their waiters' timeout).
                core.record_changes([change_of(i, Status.CANCELLED, 0) for i in elsewhere])
        return int(core.book.counts[Status.CANCELLED] - before)

    async def _requeue(self, task_ids: Sequence[str], *, wall: dt.datetime) -> int:
        core = self._core
        if not task_ids:
            return 0
        tasks = await core.guard(
            core.store.requeue_dead(
                grain=core.key,
                epoch=core.epoch,
                task_ids=task_ids,
                now=wall,
            )
        )
        core.book.requeued_from_store(tasks)
        core.committed(tasks)
        return len(tasks)

    async def _purge(self, purges: Sequence[Purge], *, wall: dt.datetime) -> int:
        """Dead tasks deleted at a tenant's request, in a fenced write like a requeue's:
        the grain stays the one writer of task rows, and a requeue and a purge of one task
        apply in the order the tenant sent them (same key, same partition)."""
        core = self._core
        if not purges:
            return 0
        purged = await core.guard(
            core.store.purge_dead(grain=core.key, epoch=core.epoch, purges=purges, now=wall)
        )
        core.book.purged_from_store(purged)
        if purged == len(purges):
            core.record_changes([change_of(p.task_id, PURGED, 0) for p in purges])
        return purged
