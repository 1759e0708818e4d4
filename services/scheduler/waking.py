"""Waking resting grains: the replica's side of the wake-up index (``store/wakeups.py``).

Once a second the replica reads the wake-ups of the shards it owns that are due (a page
of 1,000 at a time, all of them), and activates each grain it hosts (the activation's
claim clears the row; activations wait their turn, ``WSCHED_GRAIN_ACTIVATIONS``). A grain of a
pipeline that is no longer ready has its wake-up cleared instead, so it is not read
again every second; hosting that pipeline again activates such a grain if it holds
timers or schedules (``PipelineDirectory.with_work``). A pipeline made ready a moment ago
and not hosted yet is left for the next pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import sqlalchemy as sa

from actors.pipeline.model import GrainKey
from services.store import wakeups
from services.store.wakeups import WakeUp

log = logging.getLogger("wsched.scheduler.waking")


@dataclass
class WakingStats:
    woken: int = 0
    #: Wake-ups of pipelines no longer ready, cleared.
    forgotten: int = 0
    failed: int = 0


class Waking:
    def __init__(
        self,
        *,
        engine: sa.Engine,
        shards: Callable[[], Collection[int]],
        wake: Callable[[GrainKey], Awaitable[bool | None]],
        ready: Callable[[str], Awaitable[bool]],
        clock: Callable[[], dt.datetime],
        period_s: float = 1.0,
        batch: int = 1000,
        max_waking: int = 20_000,
    ) -> None:
        """``wake``: activate a hosted grain (True), or say it is not hosted here (False)
        or not yet (None); ``ready``: whether a pipeline is ready (hosted by its shard's
        owner)."""
        self._engine = engine
        self._shards = shards
        self._wake = wake
        self._ready = ready
        self._clock = clock
        self._period_s = period_s
        self._batch = batch
        self._max_waking = max_waking
        #: Grains being woken now: a pass does not start a second activation of one.
        self._waking: set[GrainKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = WakingStats()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._period_s)
                try:
                    await self.once()
                except Exception as err:  # noqa: BLE001 - the next pass tries again
                    log.warning("wake-ups not read now: %s: %s", type(err).__name__, err)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def once(self) -> int:
        """Read the due wake-ups, a page at a time, and start waking those not being
        woken (their activations wait their turn: ``WSCHED_GRAIN_ACTIVATIONS``); how many
        were started. At most ``max_waking`` are woken at once."""
        shards = set(self._shards())
        if not shards:
            return 0
        now = self._clock()
        started = 0
        last: WakeUp | None = None
        while len(self._waking) < self._max_waking:

            def read(after: WakeUp | None = last) -> list[WakeUp]:
                with self._engine.connect() as conn:
                    return wakeups.due(conn, shards=shards, now=now, limit=self._batch, after=after)

            page = await asyncio.to_thread(read)
            for wake_up in page:
                if wake_up.grain not in self._waking:
                    self._start(wake_up)
                    started += 1
            if len(page) < self._batch:
                break
            last = page[-1]
        return started

    def _start(self, wake_up: WakeUp) -> None:
        self._waking.add(wake_up.grain)
        task = asyncio.create_task(self._one(wake_up), name=f"wake {wake_up.grain}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, wake_up: WakeUp) -> None:
        try:
            woken = await self._wake(wake_up.grain)
            if woken:
                self.stats.woken += 1
            elif woken is False and not await self._ready(wake_up.grain.pipeline_id):
                await asyncio.to_thread(self._forget, wake_up)
        except Exception as err:  # noqa: BLE001 - the row stays: the next pass tries again
            self.stats.failed += 1
            log.warning("grain %s not woken: %s: %s", wake_up.grain, type(err).__name__, err)
        finally:
            self._waking.discard(wake_up.grain)

    def _forget(self, wake_up: WakeUp) -> None:
        with self._engine.begin() as conn:
            if wakeups.forget(conn, wake_up):
                self.stats.forgotten += 1
                log.info("grain %s: wake-up cleared (its pipeline is not ready)", wake_up.grain)
