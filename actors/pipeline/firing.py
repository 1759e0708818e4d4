"""How a grain fires its pipeline's schedules: the I/O around ``schedules.plan``.

Only the pipeline's first slice fires schedules, so a schedule has one firing grain. Each
firing inserts its runs' tasks and writes the schedules' new states in one fenced
transaction (``TaskStore.admit``): a crash before it fires the same nominal times again
(same task ids), a crash after it finds them fired, and a fenced ex-owner writes nothing.

Definitions reach the grain three ways: all of them at activation, the changed ones when
a ``ScheduleChanged`` record arrives on the pipeline's topic (the API produces one after
each change), and a comparison of versions in case such a record was never produced (the
API crashed between its write and its record): every ``resync_s`` by the grain itself, or,
in a scheduler replica, by the replica for all its grains in one read (``check``), which
spares an idle pipeline's grain a read of its own every 30 s.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors.pipeline.model import TERMINAL, NewTask
from actors.pipeline.ports import StoredSchedule
from actors.pipeline.schedule_book import ScheduleBook
from actors.pipeline.schedules import Overlap, Plan, ScheduleState, follow, plan, run_id

if TYPE_CHECKING:
    from actors.pipeline.core import PipelineCore

log = logging.getLogger("wsched.actors.pipeline.schedules")
#: Schedules fired per transaction, and transactions per wake-up.
FIRE_BATCH = 500
FIRE_BATCHES = 2


class ScheduleFiring:
    def __init__(self, core: PipelineCore, *, resync_s: float | None = 30.0) -> None:
        """``resync_s``: how often the grain compares versions itself; None: never, the
        replica does it for its grains (``check``)."""
        self._core = core
        self.book = ScheduleBook()
        self.enabled = core.key.slice == 0
        self._resync_s = resync_s
        self._synced_at: float | None = None

    # -- definitions ----------------------------------------------------------------------

    async def load(
        self, ids: Sequence[str] | None = None, *, stored: Sequence[StoredSchedule] | None = None
    ) -> None:
        """Read definitions (all, or those of ``ids``) and follow their changes;
        ``stored``: all of them, read already (at activation)."""
        if not self.enabled:
            return
        core = self._core
        if stored is None:
            stored = await self._core.guard(core.store.load_schedules(grain=core.key, ids=ids))
        found = {item.spec.id for item in stored}
        dropped = [sid for sid in (ids or list(self.book.versions())) if sid not in found]
        changed = [state for item in stored if (state := self._follow(item)) is not None]
        if changed or dropped:
            await self._write([], changed, dropped=dropped)
        for sid in dropped:
            self.book.remove(sid)
        self._synced_at = core.clock.monotonic()

    def _follow(self, item: StoredSchedule) -> ScheduleState | None:
        """Hold the definition; return its state if that must be written."""
        state = follow(item.spec, item.state, now=self._core.clock.wall())
        self.book.put(item.spec, state)
        return None if state == item.state else state

    async def resync(self) -> None:
        """Compare versions with the store now and then (a lost change record)."""
        if not self.enabled or self._synced_at is None or self._resync_s is None:
            return
        if self._core.clock.monotonic() - self._synced_at < self._resync_s:
            return
        stored = await self._core.guard(self._core.store.schedule_versions(grain=self._core.key))
        await self.check(stored)

    async def check(self, stored: dict[str, int]) -> None:
        """Load the definitions whose stored versions (``stored``, read by the caller)
        differ from those held, and drop those no longer stored."""
        if not self.enabled or self._synced_at is None:
            return
        mine = self.book.versions()
        stale = [sid for sid, version in stored.items() if mine.get(sid) != version]
        stale += [sid for sid in mine if sid not in stored]
        self._synced_at = self._core.clock.monotonic()
        if stale:
            await self.load(stale)

    # -- firing ---------------------------------------------------------------------------

    async def fire(self, *, batches: int = FIRE_BATCHES) -> None:
        """Fire due schedules, ``FIRE_BATCH`` to a transaction, at most ``batches``
        transactions: a grain far behind (after downtime) still answers its mailbox
        between them; the actor wakes it again at once while more are due."""
        if not self.enabled:
            return
        for _ in range(batches):
            taken = self.book.take_due(wall=self._core.clock.wall(), limit=FIRE_BATCH)
            if not taken:
                return
            try:
                await self._fire(taken)
            except BaseException:
                self.book.restore(taken)
                raise
            if len(taken) < FIRE_BATCH:
                return

    def due_now(self) -> bool:
        """Whether a fire time is due: the grain has firing to do. (A buffered run waits
        for its predecessor to end; the periodic tick looks at it.)"""
        if not self.enabled:
            return False
        due = self.book.next_due()
        return due is not None and due <= self._core.clock.wall()

    async def _fire(self, taken: list[str]) -> None:
        wall = self._core.clock.wall()
        running = await self._running(taken)
        plans: list[tuple[str, Plan]] = []
        for sid in taken:
            spec, state = self.book.get(sid)
            decided = plan(spec, state, now=wall, previous_running=state.last_task_id in running)
            if decided is None:
                self.book.update(state)
            else:
                plans.append((sid, decided))
        if not plans:
            return
        tasks = [task for sid, decided in plans for task in self._runs(sid, decided)]
        await self._write(tasks, [decided.state for _, decided in plans])
        for _, decided in plans:
            self.book.update(decided.state)

    def _runs(self, sid: str, decided: Plan) -> list[NewTask]:
        spec, _ = self.book.get(sid)
        wall = self._core.clock.wall()
        return [
            NewTask(
                id=run_id(sid, fire_at),
                data=spec.data,
                data_sha256=hashlib.sha256(spec.data).digest(),
                due_at=decided.due_at(spec, fire_at),
                created_at=wall,
                schedule_id=sid,
                fire_at=fire_at,
            )
            for fire_at in decided.runs
        ]

    async def _running(self, taken: Sequence[str]) -> set[str]:
        """Of the taken schedules' last runs (where overlap matters), those not ended."""
        core = self._core
        last: list[str] = []
        for sid in taken:
            spec, state = self.book.get(sid)
            if spec.overlap is not Overlap.ALLOW and state.last_task_id is not None:
                last.append(state.last_task_id)
        running = {tid for tid in last if core.book.is_live(tid)}
        unknown = [tid for tid in last if tid not in running and not core.book.is_terminal(tid)]
        if unknown:
            statuses = await self._core.guard(
                core.store.run_statuses(grain=core.key, task_ids=unknown)
            )
            running |= {tid for tid, status in statuses.items() if status not in TERMINAL}
        return running

    async def _write(
        self, tasks: list[NewTask], states: list[ScheduleState], *, dropped: Sequence[str] = ()
    ) -> None:
        core = self._core
        admission = await self._core.guard(
            core.store.admit(
                grain=core.key,
                epoch=core.epoch,
                tasks=tasks,
                offsets={},
                now=core.clock.wall(),
                schedules=states,
                dropped_schedules=dropped,
            )
        )
        core.admitted(admission.admitted)
        if admission.duplicates or admission.conflicts:
            log.info(
                "grain %s: %d schedule run(s) existed already (triggered or backfilled)",
                core.key,
                len(admission.duplicates) + len(admission.conflicts),
            )
