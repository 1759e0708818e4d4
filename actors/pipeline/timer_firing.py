"""How a grain fires its tasks' timers: the I/O around the timer heap (``timers.py``).

A due timer's task joins the window, queued, and nothing is written (``TaskBook.fired``):
the row stays ``scheduled`` and the timer row stays until the flush that writes the task's
next state (its lease, or an end) deletes it in the same transaction, so a crash before
that flush fires the timer again. A timer the heap kept its task for fires from memory;
the others' rows are read in one batch. Every firing runs one small fenced transaction,
even with nothing to read, so an ex-owner fires nothing.

The heap holds a prefix of the store's timers; ``refill`` reads the next ones from the
horizon on when it runs low.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors.pipeline.model import Task
from actors.pipeline.timers import TimerKey

if TYPE_CHECKING:
    from actors.pipeline.core import PipelineCore


class TimerFiring:
    def __init__(self, core: PipelineCore) -> None:
        self._core = core

    async def fire(self) -> None:
        """Fire the due timers the window has room for. Due timers go before the stored
        backlog: the grain's tick fires them before it pages in."""
        core, book = self._core, self._core.book
        wall = core.clock.wall()
        soonest = book.timers.next_due()
        if soonest is None or soonest > wall:
            return
        due = book.take_due(wall=wall)
        if not due:
            return
        held = [(key, task) for key, task in due if task is not None]
        unheld = [key for key, task in due if task is None]
        try:
            if book.dirty and (unheld or any(task.timer for _, task in held)):
                # A retry's row becomes ``scheduled``, and the timer row its last attempt
                # fired from is ended, with the next flush: read and fire only after it.
                await core.flush()
            read = await self._read(unheld, wall=wall)
        except BaseException:
            book.timers.put_back(due)  # still due; the next tick tries again
            raise
        keys = {key[1]: key for key in unheld}
        core.fired(held + [(keys[task.id], task) for task in read])

    async def _read(self, keys: Sequence[TimerKey], *, wall: dt.datetime) -> list[Task]:
        """The rows of timers fired without their tasks; a fenced read even when there are
        none, so that an ex-owner fires nothing, not even from memory."""
        core = self._core
        return await core.guard(
            core.store.fire_timers(grain=core.key, epoch=core.epoch, timers=keys, now=wall)
        )

    async def refill(self) -> None:
        """Read the next stored timers into the heap when it runs low.

        Admitted tasks' timer rows are written before they are offered to the heap; a
        retry's is written by the next flush, and until then no refill runs, so the cursor
        never passes a timer still waiting for its write.
        """
        core, book = self._core, self._core.book
        timers = book.timers
        if not timers.wants_refill() or book.has_unwritten_timers:
            return  # a retry beyond the horizon is not in the store yet: after the flush
        room = timers.refill_room()
        keys = await core.guard(
            core.store.page_timers(grain=core.key, after=timers.refill_after, limit=room)
        )
        timers.refill(keys, limit=room)
