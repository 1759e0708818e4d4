"""A shard's stalled grains (design D3): a grain that pushes back blocks nobody.

The shard's reader cannot pause the partition for one grain. A grain that has not
admitted its records ``stall_after_s`` after its neighbours did is *stalled*
(:meth:`Stalls.stall`): its admission goes on in the background, and the shard's
forwarder withholds its later records from the live stream. When the late admission
ends, a grain with nothing withheld rejoins the live stream at once (the common case: one
of thousands of grains activated at once, each with a record or two, waited its turn).
Otherwise a catch-up reader (a consumer of its own) reads the partition from its first
withheld record, handing the grain only its own records, until it reaches the live
stream's position; the grain then rejoins it. A stall's first record holds the shard's
stored offset back (:meth:`Stalls.starts`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from actors.pipeline.ports import StaleEpoch
from services.kafka.consumer import ConsumedRecord, PartitionConsumer
from services.scheduler.decode import pipeline_of

if TYPE_CHECKING:
    from services.scheduler.shard_forwarder import ShardStats

log = logging.getLogger("wsched.scheduler.shard_forwarder")


@dataclasses.dataclass
class Stall:
    #: The pipeline's first record not admitted: where a crash must replay from.
    from_offset: int
    #: The catch-up reading the withheld records, once the late admission has ended.
    task: asyncio.Task[None] | None = None
    #: The admission that was late, still running.
    late: asyncio.Task[None] | None = None
    #: The pipeline's first record withheld from the live stream; None: none yet.
    withheld_from: int | None = None


class Stalls:
    """The stalled grains of one shard's forwarder, and their catch-ups."""

    def __init__(
        self,
        *,
        shard: int,
        stats: ShardStats,
        catch_up: Callable[[], PartitionConsumer],
        admit: Callable[[str, Sequence[ConsumedRecord]], Awaitable[None]],
        live: Callable[[], int | None],
        max_records: int,
    ) -> None:
        """``catch_up`` makes a consumer of its own for a catch-up; ``admit`` has a
        grain admit its records (retrying; StaleEpoch when fenced); ``live`` is the live
        stream's position (every record below it was routed)."""
        self.shard = shard
        self.stats = stats
        self._consumer = catch_up
        self._admit = admit
        self._live = live
        self._max_records = max_records
        self._stalled: dict[str, Stall] = {}

    def get(self, pipeline_id: str) -> Stall | None:
        return self._stalled.get(pipeline_id)

    def pipelines(self) -> frozenset[str]:
        return frozenset(self._stalled)

    def starts(self) -> list[int]:
        """Each stalled grain's first record not admitted: the stored offset stays below."""
        return [stall.from_offset for stall in self._stalled.values()]

    def cancel(self) -> None:
        for stall in self._stalled.values():
            for task in (stall.task, stall.late):
                if task is not None:
                    task.cancel()

    def stall(self, pipeline_id: str, from_offset: int, *, late: asyncio.Task[None]) -> None:
        """The pipeline's admission ``late`` did not end in time: it goes on in the
        background, and the pipeline's later records are withheld from the live stream."""
        log.warning(
            "shard %d: pipeline %s is stalled at @%d; its later records wait",
            self.shard,
            pipeline_id,
            from_offset,
        )
        self.stats.stalls += 1
        stall = Stall(from_offset=from_offset, late=late)
        self._stalled[pipeline_id] = stall
        late.add_done_callback(lambda task: self._late_ended(pipeline_id, task))

    def _late_ended(self, pipeline_id: str, task: asyncio.Task[None]) -> None:
        """The late admission ended: rejoin the live stream at once if nothing was
        withheld meanwhile (no ``await`` between the check and the rejoining), else catch
        up from the first withheld record."""
        stall = self._stalled.get(pipeline_id)
        if stall is None or stall.late is not task or task.cancelled():
            return
        stall.late = None
        if task.exception() is not None:
            # Fenced (the only failure ``_admit`` lets through): the stored offset stays
            # held back, and the shard's forwarder is fenced too at its next save.
            log.warning("shard %d: pipeline %s: late admission failed", self.shard, pipeline_id)
            return
        if stall.withheld_from is None:
            del self._stalled[pipeline_id]
            self.stats.caught_up += 1
            log.info("shard %d: pipeline %s admitted late, rejoined", self.shard, pipeline_id)
            return
        stall.from_offset = stall.withheld_from
        self._start_catch_up(pipeline_id, stall)

    def _start_catch_up(self, pipeline_id: str, stall: Stall) -> None:
        log.info(
            "shard %d: pipeline %s catches up on its own reader from @%d",
            self.shard,
            pipeline_id,
            stall.from_offset,
        )
        stall.task = asyncio.create_task(
            self._catch_up(pipeline_id, stall), name=f"catch-up {pipeline_id}"
        )
        stall.task.add_done_callback(lambda task: self._caught_up(pipeline_id, task))

    async def _catch_up(self, pipeline_id: str, stall: Stall) -> None:
        """Admit the pipeline's records from its first withheld one up to the live
        stream's position, then let it rejoin the live stream. The check that it has
        reached the live position and its rejoining happen with no ``await`` between, so
        every record is either the catch-up's or the live stream's, never both or none."""
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.assign([self.shard])
            consumer.seek(self.shard, stall.from_offset)
            carried: list[ConsumedRecord] = []  # the pipeline's records read, not admitted
            read_to = stall.from_offset
            while True:
                handed = self._live()
                live = handed if handed is not None else read_to
                due = [r for r in carried if r.offset < live]
                if due:
                    carried = carried[len(due) :]
                    await self._admit(pipeline_id, due)
                    continue
                if read_to >= live:
                    break
                records = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
                for record in records.get(self.shard, ()):
                    read_to = record.offset + 1
                    if (record.pipeline_id or pipeline_of(record.value)) == pipeline_id:
                        carried.append(record)
            # Rejoin: what is left in ``carried`` is past the live position, and the live
            # stream routes it now.
            del self._stalled[pipeline_id]
        finally:
            await consumer.stop()

    def _caught_up(self, pipeline_id: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.stats.caught_up += 1
            log.info("shard %d: pipeline %s caught up and rejoined", self.shard, pipeline_id)
            return
        # Fenced, or a failure of its own reader: try again from the same place (the
        # stored offset has not moved past it).
        log.warning("shard %d: pipeline %s: catch-up failed: %r", self.shard, pipeline_id, error)
        stall = self._stalled.get(pipeline_id)
        if stall is not None and stall.task is task and not isinstance(error, StaleEpoch):
            self._start_catch_up(pipeline_id, stall)
