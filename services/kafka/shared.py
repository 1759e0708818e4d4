"""One Kafka consumer per scheduler replica, read by every grain it hosts.

A consumer of its own per grain cost a replica its fetch loop, its connections and a fetch
request every half second per pipeline: with 200 empty pipelines a py-spy profile of an
idle replica spent about 80 % of its busy time in aiokafka's fetcher, and the broker
answered 400 empty fetches a second. :class:`SharedKafkaReader` fetches every partition
the replica's grains read in one loop, one request per broker, and hands each grain its
own topic's records through a :class:`SharedPartitionConsumer`, which keeps the
``PartitionConsumer`` contract (``consumer.py``), so a forwarder does not know.

- **Positions** are the reader's: the next offset after the records it handed to a view
  (or where a view sought). aiokafka forgets every position when the assignment changes,
  so each ``assign`` (a grain arriving or leaving) sets the others' back at once.
- **A grain that pushes back blocks nobody.** Records handed to a view wait in it until
  its forwarder takes them; once a view holds ``max_records`` (its forwarder is busy, or
  stalled on a store that is down), its partitions are paused, so the shared fetch skips
  them, and resumed when the forwarder has taken what waits. aiokafka drops what it had
  prefetched for a paused partition without moving the position: nothing is lost or
  read twice, and memory stays bounded by about two batches per grain.
- **End offsets** (the lag metric) are read for every assigned partition in one request
  and shared for ``end_offsets_ttl_s``; commits (informational: the store's offsets are
  what a new owner resumes from) of the views waiting together go in one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Collection, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.kafka.consumer import ConsumedRecord, consumed

log = logging.getLogger("wsched.kafka.shared")

#: How long the shared fetch waits for records before it fetches again.
FETCH_WAIT_MS = 500
#: After a failed fetch, the pause before the next, doubling up to ``_RETRY_MAX_S``.
_RETRY_S, _RETRY_MAX_S = 0.1, 5.0


#: What aiokafka's fetch says, for ever, once its group coordination task has died.
_BROKEN = "Unexpected error during coordination"


class SharedKafkaReader:
    """Use as ``async with SharedKafkaReader(...) as reader`` or ``start``/``stop``; a grain
    reads through ``reader.view(topic)``."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str | None,
        max_records: int = 5000,
        max_partition_fetch_bytes: int = 4 * 1024 * 1024,
        end_offsets_ttl_s: float = 2.0,
    ) -> None:
        """``group_id`` only names where commits go (None: nowhere): partitions are
        assigned, never balanced; ``max_records``: a fetch's records and what one view may
        hold."""
        self._consumer_args: dict[str, object] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": max_partition_fetch_bytes,
            "fetch_max_wait_ms": FETCH_WAIT_MS,
        }
        self._consumer = AIOKafkaConsumer(**self._consumer_args)
        #: Set when a new consumer could not start: the fetch loop tries again.
        self._renewing = False
        self.max_records = max_records
        #: Who reads each partition: a view may read several partitions of its topic,
        #: and several views one topic (the shared topic: one view per shard).
        self._views: dict[TopicPartition, SharedPartitionConsumer] = {}
        #: The next offset to hand out, by partition, once known.
        self._positions: dict[TopicPartition, int] = {}
        #: The partitions the views want, and those the consumer is assigned now (the
        #: fetch loop applies the first before each fetch).
        self._wanted: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] = set()
        self._dirty = False
        self._paused: set[TopicPartition] = set()
        self._wake = asyncio.Event()
        self._applied = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._started = False
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._ends: dict[TopicPartition, int] = {}
        self._ends_at = -1.0e9
        self._ends_ttl_s = end_offsets_ttl_s
        self._ends_lock = asyncio.Lock()

    async def __aenter__(self) -> SharedKafkaReader:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()  # a failed start still holds its connections
            raise
        self._started = True
        self._loop = asyncio.create_task(self._fetch_forever(), name="shared kafka reader")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._started:
            self._started = False
            await self._consumer.stop()

    def view(self, topic: str) -> SharedPartitionConsumer:
        """A ``PartitionConsumer`` of ``topic``: a grain's, or a shard's of the shared topic
        (a partition is read by one view at a time: ``assign`` refuses a taken one)."""
        return SharedPartitionConsumer(reader=self, topic=topic)

    @property
    def partitions(self) -> int:
        """How many partitions the reader's views read."""
        return len(self._wanted)

    # -- what views call ------------------------------------------------------------------

    def _attach(self, view: SharedPartitionConsumer, partitions: Collection[int]) -> None:
        tps = {TopicPartition(view.topic, p) for p in partitions}
        taken = sorted(str(tp) for tp in tps if self._views.get(tp, view) is not view)
        if taken:
            raise ValueError(f"already read through this reader: {', '.join(taken)}")
        self._views = {tp: v for tp, v in self._views.items() if v is not view}
        self._views.update(dict.fromkeys(tps, view))
        self._reassign()

    def _detach(self, view: SharedPartitionConsumer) -> None:
        kept = {tp: v for tp, v in self._views.items() if v is not view}
        if len(kept) != len(self._views):
            self._views = kept
            self._reassign()

    def _reassign(self) -> None:
        """Note the partitions the views want; the fetch loop assigns them before its next
        fetch (one assignment for many grains arriving together, not one each)."""
        wanted = set(self._views)
        if wanted == self._wanted:
            return
        for gone in self._wanted - wanted:
            self._positions.pop(gone, None)
        self._wanted = wanted
        self._paused &= wanted
        self._dirty = True
        self._wake.set()

    def _apply(self) -> None:
        """Assign what the views want. A new assignment forgets every position and pause:
        set the known ones again."""
        self._dirty = False
        self._assigned = set(self._wanted)
        if self._assigned:
            self._consumer.assign(sorted(self._assigned))
            for tp, offset in self._positions.items():
                self._consumer.seek(tp, offset)
            if self._paused:
                self._consumer.pause(*self._paused)
        else:
            # No unsubscribe: it races aiokafka's group coordination task while the broker
            # is away, whose assertion then breaks the consumer for good (``_renew`` stays
            # as the safety net). The last assignment stays, paused: nothing is fetched.
            held = self._consumer.assignment()
            if held:
                self._consumer.pause(*held)
        applied, self._applied = self._applied, asyncio.Event()
        applied.set()

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset
        if tp in self._assigned:
            self._consumer.seek(tp, offset)

    def _set_paused(self, tps: Collection[TopicPartition], paused: bool) -> None:
        tps = [tp for tp in tps if tp in self._wanted and (tp in self._paused) != paused]
        if paused:
            self._paused.update(tps)
        else:
            self._paused.difference_update(tps)
        applied = [tp for tp in tps if tp in self._assigned]
        if applied and paused:
            self._consumer.pause(*applied)
        elif applied:
            self._consumer.resume(*applied)

    async def _position(self, tp: TopicPartition) -> int:
        while tp not in self._positions and tp in self._wanted and tp not in self._assigned:
            await self._applied.wait()
        if tp in self._positions:
            return self._positions[tp]
        return int(await self._consumer.position(tp))

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit with whatever other views wait to commit: one request for all of them.
        A view whose offsets went with another's request returns when that one ended."""
        self._to_commit.update(offsets)
        async with self._commit_lock:
            batch = {tp: o for tp, o in self._to_commit.items() if tp in self._assigned}
            self._to_commit.clear()
            if batch:
                await self._consumer.commit(batch)

    async def _end_offsets(self, tps: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        async with self._ends_lock:
            fresh = time.monotonic() - self._ends_at < self._ends_ttl_s
            if not fresh or any(tp not in self._ends for tp in tps):
                ends = await self._consumer.end_offsets(sorted(self._wanted | set(tps)))
                self._ends = {tp: int(offset) for tp, offset in ends.items()}
                self._ends_at = time.monotonic()
            return {tp: self._ends[tp] for tp in tps}

    # -- the fetch loop -------------------------------------------------------------------

    async def _renew(self) -> None:
        """Put a new consumer in place of one that is broken for good: aiokafka's group
        coordination task can die (an assertion on an assignment changed while the broker
        was away), and every fetch then fails the same way. The new one is assigned the
        views' partitions and sought to the positions handed out, so nothing is lost or
        read twice; the others start from the group's committed offsets, as at first."""
        log.warning("shared reader: its consumer is broken; starting a new one")
        old, self._consumer = self._consumer, AIOKafkaConsumer(**self._consumer_args)
        with contextlib.suppress(Exception):
            await old.stop()
        self._assigned = set()
        self._dirty = True
        try:
            await self._consumer.start()
        except Exception as err:  # noqa: BLE001 - the broker away: the loop tries again
            log.warning("shared reader: a new consumer could not start: %s", err)
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._renewing = True
            return
        self._renewing = False

    async def _fetch_forever(self) -> None:
        delay = _RETRY_S
        while True:
            await self._wake.wait()
            if self._renewing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                await self._renew()
                continue
            if self._dirty:
                self._apply()
            if not self._assigned:
                self._wake.clear()
                continue
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=FETCH_WAIT_MS, max_records=self.max_records
                )
            except Exception as err:  # noqa: BLE001 - Kafka away: keep trying, lose nothing
                log.warning(
                    "shared fetch failed (%s: %s); again in %.1fs", type(err).__name__, err, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                if _BROKEN in str(err):
                    await self._renew()
                continue
            delay = _RETRY_S
            if self._dirty:
                # Views came or went during the fetch: hand out nothing. Positions move
                # only with what is handed out, so the next assignment reads these again.
                continue
            for tp, records in batches.items():
                view = self._views.get(tp)
                if view is None or not records:
                    continue
                self._positions[tp] = records[-1].offset + 1
                view._deliver(tp.partition, [consumed(tp.partition, r) for r in records])


class SharedPartitionConsumer:
    """One grain's :class:`~services.kafka.consumer.PartitionConsumer` over a
    :class:`SharedKafkaReader`: its topic's records, its seeks, pauses and commits."""

    def __init__(self, *, reader: SharedKafkaReader, topic: str) -> None:
        self._reader = reader
        self.topic = topic
        self.partitions: tuple[int, ...] = ()
        self._waiting: dict[int, deque[ConsumedRecord]] = {}
        self._held = 0
        self._arrived = asyncio.Event()
        #: Paused by the grain (``pause``), as opposed to held back for room.
        self._paused: set[int] = set()
        self._full = False

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    @property
    def held(self) -> int:
        """Records handed to this view that its reader has not taken yet."""
        return self._held

    async def start(self) -> None:
        """The reader is started by its owner; a view has nothing to start."""

    async def stop(self) -> None:
        self._reader._detach(self)
        self._waiting.clear()
        self._held = 0

    def assign(self, partitions: Collection[int]) -> None:
        self.partitions = tuple(sorted(set(partitions)))
        self._waiting = {p: deque() for p in self.partitions}
        self._held = 0
        self._paused &= set(self.partitions)
        self._full = False
        self._reader._attach(self, self.partitions)
        self._reader._set_paused([self._tp(p) for p in self._paused], True)

    def seek(self, partition: int, offset: int) -> None:
        if partition not in self._waiting:
            raise ValueError(f"partition {partition} is not assigned")
        self._held -= len(self._waiting[partition])
        self._waiting[partition].clear()
        self._reader._seek(self._tp(partition), offset)

    def pause(self, partitions: Collection[int]) -> None:
        chosen = set(partitions) & set(self.partitions)
        self._paused |= chosen
        self._reader._set_paused([self._tp(p) for p in chosen], True)

    def resume(self, partitions: Collection[int]) -> None:
        chosen = set(partitions) & self._paused
        self._paused -= chosen
        if not self._full:
            self._reader._set_paused([self._tp(p) for p in chosen], False)
        if any(self._waiting.get(p) for p in chosen):
            self._arrived.set()

    def _deliver(self, partition: int, records: list[ConsumedRecord]) -> None:
        self._waiting[partition].extend(records)
        self._held += len(records)
        if self._held >= self._reader.max_records and not self._full:
            self._full = True
            self._reader._set_paused([self._tp(p) for p in self.partitions], True)
        self._arrived.set()

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[int, list[ConsumedRecord]]:
        batch = self._take(max_records)
        if not batch:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_ms / 1000):
                    await self._arrived.wait()
            batch = self._take(max_records)
        return batch

    def _take(self, max_records: int) -> dict[int, list[ConsumedRecord]]:
        batch: dict[int, list[ConsumedRecord]] = {}
        room = max_records
        for partition, waiting in self._waiting.items():
            if partition in self._paused or not waiting or room <= 0:
                continue
            taken = [waiting.popleft() for _ in range(min(room, len(waiting)))]
            batch[partition] = taken
            room -= len(taken)
        self._held -= max_records - room
        if self._full and self._held < self._reader.max_records:
            self._full = False
            unpaused = [p for p in self.partitions if p not in self._paused]
            self._reader._set_paused([self._tp(p) for p in unpaused], False)
        return batch

    async def commit(self, offsets: Mapping[int, int]) -> None:
        await self._reader._commit({self._tp(p): o for p, o in offsets.items()})

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        ends = await self._reader._end_offsets([self._tp(p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def position(self, partition: int) -> int:
        waiting = self._waiting.get(partition)
        if waiting:
            return waiting[0].offset
        return await self._reader._position(self._tp(partition))


class ReaderOfItsOwn:
    """A ``PartitionConsumer`` with a reader of its own, started and stopped with it: for a
    short read beside the replica's reader (a stalled grain's catch-up on the shared
    topic, whose partition the replica's reader is reading at the same time)."""

    def __init__(self, *, bootstrap: str, topic: str, max_records: int = 5000) -> None:
        self._reader = SharedKafkaReader(
            bootstrap=bootstrap, group_id=None, max_records=max_records
        )
        self._view = self._reader.view(topic)

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._view.stop()
        await self._reader.stop()

    def assign(self, partitions: Collection[int]) -> None:
        self._view.assign(partitions)

    def seek(self, partition: int, offset: int) -> None:
        self._view.seek(partition, offset)

    def pause(self, partitions: Collection[int]) -> None:
        self._view.pause(partitions)

    def resume(self, partitions: Collection[int]) -> None:
        self._view.resume(partitions)

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[int, list[ConsumedRecord]]:
        return await self._view.getmany(timeout_ms=timeout_ms, max_records=max_records)

    async def commit(self, offsets: Mapping[int, int]) -> None:
        raise NotImplementedError("a reader of its own commits nothing")

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        return await self._view.end_offsets(partitions)

    async def position(self, partition: int) -> int:
        return await self._view.position(partition)
