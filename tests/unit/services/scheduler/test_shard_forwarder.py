"""The shard forwarder on the in-memory log: routing by pipeline, the shard's offset, gone
pipelines, strays, and a stalled grain that blocks nobody and catches up exactly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from actors.pipeline.model import AdmitBatch, AdmitResult
from actors.pipeline.ports import StaleEpoch
from protos.wsched.v1 import events_pb2
from services.kafka.consumer import MemoryConsumer, MemoryLog
from services.scheduler.forwarder import Admit
from services.scheduler.shard_forwarder import ShardForwarder
from services.store.quarantine import Quarantined
from services.store.shard_offsets import ShardClaim

SHARD = 3
#: Guard for awaiting an effect; only reached when broken.
GUARD_S = 5.0


def submit(pipeline_id: str, task_id: str) -> bytes:
    return events_pb2.TaskEvent(
        schema_version=1,
        pipeline_id=pipeline_id,
        task_id=task_id,
        submit=events_pb2.SubmitTask(data=b"{}"),
    ).SerializeToString()


@dataclass
class Offsets:
    stored: int | None = None
    epoch: int = 7
    saves: list[int] = field(default_factory=list)
    fenced: bool = False
    #: Cleared: a save waits (the store slow) until it is set again.
    open: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.open.set()

    async def claim(self, shard: int, *, owner: str) -> ShardClaim:
        assert shard == SHARD
        return ShardClaim(epoch=self.epoch, next_offset=self.stored)

    async def save(self, shard: int, *, epoch: int, next_offset: int) -> None:
        await self.open.wait()
        if self.fenced:
            raise StaleEpoch("shard moved")
        assert epoch == self.epoch
        self.saves.append(next_offset)
        self.stored = next_offset


@dataclass
class Grain:
    """Admits what it is given unless ``blocked`` is set (then waits for it to clear)."""

    ids: list[str] = field(default_factory=list)
    batches: list[AdmitBatch] = field(default_factory=list)
    open: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set: it holds the tasks in memory (the write delay) until ``write_held``.
    holds: bool = False

    def __post_init__(self) -> None:
        self.open.set()

    async def admit(self, batch: AdmitBatch) -> AdmitResult:
        await self.open.wait()
        self.batches.append(batch)
        self.ids.extend(task.id for task in batch.new)
        return AdmitResult(
            admitted=len(batch.new),
            duplicates=0,
            conflicts=0,
            cancelled=0,
            requeued=0,
            held=self.holds,
        )

    def write_held(self) -> None:
        """Its flush wrote what it held: it tells the forwarder of each batch."""
        for batch in self.batches:
            assert batch.on_written is not None
            batch.on_written()


class Harness:
    def __init__(self, pipelines: Sequence[str], *, stored: int | None = None) -> None:
        self.log = MemoryLog(partitions=SHARD + 1)
        self.consumer = MemoryConsumer(log=self.log)
        self.catch_ups: list[MemoryConsumer] = []
        self.grains = {pid: Grain() for pid in pipelines}
        self.offsets = Offsets(stored=stored)
        self.kept: list[Quarantined] = []
        self.forwarder = ShardForwarder(
            shard=SHARD,
            consumer=self.consumer,
            catch_up=self.catch_up,
            offsets=self.offsets,
            owner="me",
            route=self.route,
            keep=self.keep,
            stall_after_s=0.05,
            monotonic=lambda: 0.0,
        )

    def catch_up(self) -> MemoryConsumer:
        consumer = MemoryConsumer(log=self.log)
        self.catch_ups.append(consumer)
        return consumer

    async def route(self, pipeline_id: str) -> Admit | None:
        grain = self.grains.get(pipeline_id)
        return grain.admit if grain is not None else None

    async def keep(self, records: Sequence[Quarantined]) -> None:
        self.kept.extend(records)

    def append(self, pipeline_id: str, task_id: str) -> int:
        return self.log.append(SHARD, submit(pipeline_id, task_id), pipeline_id=pipeline_id)

    def open_saves(self) -> None:
        self.offsets.open.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(GUARD_S):
            while not done():
                await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def running(h: Harness):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(h.forwarder.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_records_go_to_their_pipelines_grains_and_the_offset_is_the_shards() -> None:
    h = Harness(["a", "b"])
    for i in range(3):
        h.append("a", f"a{i}")
        h.append("b", f"b{i}")
    async with running(h):
        await h.until(lambda: h.offsets.stored == 6)
    assert h.grains["a"].ids == ["a0", "a1", "a2"]
    assert h.grains["b"].ids == ["b0", "b1", "b2"]
    # The grains store no offsets of their own: the partition is the shard's.
    assert all(not batch.offsets for g in h.grains.values() for batch in g.batches)
    assert h.log.committed == {SHARD: 6}
    assert h.forwarder.pipelines["a"].admitted == 3


async def test_a_slow_offset_save_holds_no_record_back() -> None:
    h = Harness(["a"])
    h.offsets.open.clear()
    h.append("a", "a0")
    async with running(h):
        await h.until(lambda: h.grains["a"].ids == ["a0"])
        # The first batch's offset is being saved (the store is slow); the next record
        # is admitted meanwhile, not after the save.
        h.append("a", "a1")
        h.append("a", "a2")
        await h.until(lambda: h.grains["a"].ids == ["a0", "a1", "a2"])
        for _ in range(20):  # the forwarder takes the admissions' ends (all in memory)
            await asyncio.sleep(0)
        assert h.offsets.saves == []
        h.open_saves()
        # The save under way goes on to the newest offset: one more, not one per batch.
        await h.until(lambda: h.offsets.stored == 3)
    assert h.offsets.saves == [1, 3]


async def test_the_stored_offset_waits_for_tasks_a_grain_holds_without_a_row() -> None:
    """The write delay (design D2): a grain that holds a batch's tasks in memory keeps
    the shard's stored offset at that batch's first record until it has written them;
    its neighbours' records are admitted meanwhile, and a crash would replay from there."""
    h = Harness(["a", "b"])
    h.grains["a"].holds = True
    h.append("b", "b0")
    h.append("a", "a0")  # offset 1
    h.append("b", "b1")
    async with running(h):
        await h.until(lambda: h.grains["b"].ids == ["b0", "b1"] and h.grains["a"].ids == ["a0"])
        await h.until(lambda: h.offsets.stored == 1)
        h.append("b", "b2")
        await h.until(lambda: h.grains["b"].ids == ["b0", "b1", "b2"])
        for _ in range(20):
            await asyncio.sleep(0)
        assert h.offsets.stored == 1, "the offset passed tasks that have no row"
        h.grains["a"].write_held()  # stored at once: no next batch needed
        await h.until(lambda: h.offsets.stored == 4)
        h.append("b", "b3")
        await h.until(lambda: h.offsets.stored == 5)
    assert h.offsets.saves == [1, 4, 5]


async def test_it_resumes_from_the_stored_offset() -> None:
    h = Harness(["a"], stored=2)
    for i in range(4):
        h.append("a", f"a{i}")
    async with running(h):
        await h.until(lambda: h.offsets.stored == 4)
    assert h.grains["a"].ids == ["a2", "a3"]


async def test_records_of_a_gone_pipeline_are_dropped_and_counted() -> None:
    h = Harness(["a"])
    h.append("gone", "g0")
    h.append("a", "a0")
    async with running(h):
        await h.until(lambda: h.offsets.stored == 2)
    assert h.grains["a"].ids == ["a0"]
    assert h.forwarder.stats.dropped == 1


async def test_a_record_naming_no_pipeline_is_quarantined_under_the_shard() -> None:
    h = Harness(["a"])
    h.log.append(SHARD, b"\xff not an event")
    h.append("a", "a0")
    async with running(h):
        await h.until(lambda: h.offsets.stored == 2)
    assert [(k.pipeline_id, k.offset) for k in h.kept] == [(f"shard:{SHARD}", 0)]
    assert h.grains["a"].ids == ["a0"]


async def test_a_stalled_grain_blocks_nobody_and_catches_up_exactly() -> None:
    h = Harness(["slow", "fast"])
    h.grains["slow"].open.clear()
    first = h.append("slow", "s0")
    h.append("fast", "f0")
    h.append("slow", "s1")
    async with running(h):
        await h.until(lambda: h.forwarder.stalled == {"slow"})
        # Its neighbour goes on, and the slow one's later records are withheld.
        h.append("fast", "f1")
        h.append("slow", "s2")
        h.append("fast", "f2")
        await h.until(lambda: h.grains["fast"].ids == ["f0", "f1", "f2"])
        await h.until(lambda: h.offsets.saves[-1:] == [first])
        assert h.offsets.stored == first  # a crash now replays from the stalled grain
        h.grains["slow"].open.set()
        await h.until(lambda: not h.forwarder.stalled)
        # Back on the live stream.
        h.append("slow", "s3")
        await h.until(lambda: h.grains["slow"].ids[-1:] == ["s3"])
        await h.until(lambda: h.offsets.stored == 7)
    assert h.grains["slow"].ids == ["s0", "s1", "s2", "s3"]  # each once, in order
    assert h.forwarder.stats.stalls == 1
    assert h.forwarder.stats.caught_up == 1
    assert h.catch_ups and all(c.stopped for c in h.catch_ups)


async def test_a_late_grain_with_nothing_withheld_rejoins_without_a_reader() -> None:
    """The herd: thousands of grains activated at once, one record each; the late ones
    finish their admission in turn and need no consumer of their own."""
    h = Harness(["slow", "fast"])
    h.grains["slow"].open.clear()
    first = h.append("slow", "s0")
    h.append("fast", "f0")
    async with running(h):
        await h.until(lambda: h.forwarder.stalled == {"slow"})
        await h.until(lambda: h.offsets.saves[-1:] == [first])
        h.grains["slow"].open.set()
        await h.until(lambda: not h.forwarder.stalled)
        h.append("slow", "s1")  # the live stream's again
        await h.until(lambda: h.grains["slow"].ids == ["s0", "s1"])
        await h.until(lambda: h.offsets.stored == 3)
    assert h.forwarder.stats.stalls == 1 and h.forwarder.stats.caught_up == 1
    assert h.catch_ups == []


async def test_nobody_is_stalled_when_no_grain_gets_through() -> None:
    h = Harness(["a", "b"])
    for grain in h.grains.values():
        grain.open.clear()
    h.append("a", "a0")
    h.append("b", "b0")
    async with running(h):
        await asyncio.sleep(0.2)  # four times the stall timeout
        assert not h.forwarder.stalled
        assert h.offsets.stored is None
        for grain in h.grains.values():
            grain.open.set()
        await h.until(lambda: h.offsets.stored == 2)
    assert (h.grains["a"].ids, h.grains["b"].ids) == (["a0"], ["b0"])
    assert h.forwarder.stats.stalls == 0


async def test_a_fenced_shard_stops_its_forwarder() -> None:
    h = Harness(["a"])
    h.offsets.fenced = True
    h.append("a", "a0")
    async with running(h) as task:
        await h.until(task.done)
    assert task.exception() is None
    assert h.consumer.stopped
