"""Shard forwarders: feed the grains of a shard's shared pipelines (design D3).

A pipeline on the shared topic has no partition of its own: its records are on partition
``shard_of(pipeline)`` of ``wsched.shared``, with its id in the ``wsched-pipeline``
header, beside the records of every other shared pipeline of the shard. The shard's owner
runs one :class:`ShardForwarder` per owned shard: it reads the partition, groups each
batch by pipeline and has every pipeline's grain admit its records at once (each in its
own fenced transaction, as a dedicated topic's forwarder does), then stores the
partition's next offset fenced by the shard's epoch (``services/store/shard_offsets.py``).

- **Offsets are the shard's.** The stored offset is the lowest record some grain may
  still lack: the end of the last batch, or a stalled grain's first withheld record. A
  crash replays from there; the grains recognise what they already admitted (every
  admitted id is checked against memory and the store), so a replay makes no second task.
- **Nothing but admission is on the live path.** The offset is stored, and the lag read,
  in the background (one save at a time, of the newest offset, while the next batch is
  read and admitted): a record of one pipeline no longer waits for the previous record's
  offset write and Kafka commit, or the lag's broker request. Stored later, the offset
  replays a batch or two more after a crash, recognised as above.
- **A stalled grain blocks nobody** (``shard_stalls.py``): a grain that has not admitted
  its records ``stall_after_s`` after its neighbours did goes on in the background, its
  later records withheld from the live stream and caught up on a reader of its own. If no
  grain of a batch gets through (the store is down), nobody is stalled: they all wait,
  as one grain with a topic of its own would.
- **Unknown pipelines.** A record for a pipeline the replica does not host yet (it was
  made ready a moment ago) hosts it; one for a pipeline that is gone or being deleted is
  dropped (its rows are being purged) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from actors.pipeline.model import AdmitBatch, AdmitResult
from actors.pipeline.ports import StaleEpoch
from services.kafka.consumer import ConsumedRecord, PartitionConsumer
from services.scheduler.decode import pipeline_of
from services.scheduler.forwarder import (
    LAG_INTERVAL_S,
    Admit,
    Fetched,
    ForwarderStats,
    Keep,
    build_batch,
)
from services.scheduler.shard_stalls import Stalls
from services.store.quarantine import Quarantined
from services.store.shard_offsets import ShardClaim, shard_key

log = logging.getLogger("wsched.scheduler.shard_forwarder")

#: How a shard forwarder reaches a pipeline's grain: its admission, or None if the
#: pipeline is not one of the shard's live pipelines (its records are dropped).
Route = Callable[[str], Awaitable[Admit | None]]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class ShardOffsets(Protocol):
    async def claim(self, shard: int, *, owner: str) -> ShardClaim: ...

    async def save(self, shard: int, *, epoch: int, next_offset: int) -> None: ...


@dataclasses.dataclass(kw_only=True)
class ShardStats:
    """The shard's figures; per pipeline ones are in ``ShardForwarder.pipelines``."""

    lag: int = 0
    #: Records of pipelines that are gone (or being deleted), skipped.
    dropped: int = 0
    #: Times a grain was left behind the live stream, and caught up.
    stalls: int = 0
    caught_up: int = 0


class ShardForwarder:
    def __init__(
        self,
        *,
        shard: int,
        consumer: PartitionConsumer,
        catch_up: Callable[[], PartitionConsumer],
        offsets: ShardOffsets,
        owner: str,
        route: Route,
        keep: Keep,
        max_records: int = 5000,
        stall_after_s: float = 10.0,
        retry_max_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``consumer`` reads the shard's partition (started and stopped by ``run``);
        ``catch_up`` makes a consumer of its own for a stalled grain's catch-up."""
        self.shard = shard
        self._consumer = consumer
        self._offsets = offsets
        self._owner = owner
        self._route = route
        self._keep = keep
        self._max_records = max_records
        self._stall_after_s = stall_after_s
        self._retry_max_s = retry_max_s
        self._sleep = sleep
        self._monotonic = monotonic
        self.stats = ShardStats()
        self.pipelines: dict[str, ForwarderStats] = {}
        self._epoch = 0
        #: Every record below this offset was routed: admitted, dropped, or withheld
        #: from a stalled pipeline (whose catch-up reads it). None before the first batch.
        self._handed: int | None = None
        #: Every record below this offset was admitted, dropped, or is a stalled
        #: pipeline's (its stall holds the offset back): what may be stored.
        self._routed: int | None = None
        self._stalls = Stalls(
            shard=shard,
            stats=self.stats,
            catch_up=catch_up,
            admit=self._admit,
            live=lambda: self._handed,
            max_records=max_records,
        )
        #: Batches admitted by grains that hold some of their tasks in memory without a
        #: row (the write delay, design D2): each holds the stored offset at its first
        #: record until its grain has written them (``AdmitBatch.on_written``).
        self._holds: dict[object, int] = {}
        self._saved: int | None = None
        self._reading = False
        self._lag_due = 0.0
        self._saver: asyncio.Task[None] | None = None
        self._lag_reader: asyncio.Task[None] | None = None

    @property
    def stalled(self) -> frozenset[str]:
        return self._stalls.pipelines()

    async def run(self) -> None:
        """Forward until cancelled or the shard is fenced (another replica claimed it)."""
        claim = await self._retrying(
            "claim", lambda: self._offsets.claim(self.shard, owner=self._owner)
        )
        self._epoch, self._saved = claim.epoch, claim.next_offset
        await self._consumer.start()
        self._reading = True
        try:
            self._consumer.assign([self.shard])
            if claim.next_offset is not None:
                self._consumer.seek(self.shard, claim.next_offset)
            while True:
                records = await self._read()
                batch = records.get(self.shard)
                if batch:
                    await self._forward(batch)
                    self._routed = self._handed
                    self._save_soon()
                if self._monotonic() >= self._lag_due:
                    self._lag_due = self._monotonic() + LAG_INTERVAL_S
                    self._save_soon()  # a catch-up that ended since moves it on
                    if self._lag_reader is None or self._lag_reader.done():
                        self._lag_reader = asyncio.create_task(self._update_lag())
        except StaleEpoch:
            log.info("shard %d: fenced, its forwarder stops", self.shard)
        finally:
            self._reading = False
            self._cancel_background()
            await self._consumer.stop()

    def _cancel_background(self) -> None:
        for task in (self._saver, self._lag_reader):
            if task is not None:
                task.cancel()
        self._stalls.cancel()

    # -- the live stream ------------------------------------------------------------------

    async def _forward(self, batch: Sequence[ConsumedRecord]) -> None:
        groups: dict[str, list[ConsumedRecord]] = {}
        strays: list[ConsumedRecord] = []
        for record in batch:
            pipeline_id = record.pipeline_id or pipeline_of(record.value)
            if pipeline_id is None:
                strays.append(record)
            elif (stall := self._stalls.get(pipeline_id)) is None:
                groups.setdefault(pipeline_id, []).append(record)
            elif stall.withheld_from is None:
                stall.withheld_from = record.offset
        self._handed = batch[-1].offset + 1
        if strays:
            await self._retrying("quarantine", lambda: self._keep(self._strays(strays)))
        admissions = {
            asyncio.create_task(self._admit(pid, records), name=f"admit {pid}"): pid
            for pid, records in groups.items()
        }
        if not admissions:
            return
        done, waiting = await asyncio.wait(admissions, timeout=self._stall_after_s)
        while waiting and not done:
            # Nobody got through: nobody waits on anybody (the store is down, say).
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            self._stalls.stall(admissions[task], groups[admissions[task]][0].offset, late=task)
        for task in done:
            task.result()  # StaleEpoch ends the shard's forwarder

    def _strays(self, records: Sequence[ConsumedRecord]) -> list[Quarantined]:
        for record in records:
            log.warning("shard %d: record @%d names no pipeline", self.shard, record.offset)
        return [
            Quarantined(
                pipeline_id=shard_key(self.shard),
                partition=record.partition,
                offset=record.offset,
                reason="a shared topic record that names no pipeline",
                raw=record.value or b"",
            )
            for record in records
        ]

    async def _admit(self, pipeline_id: str, records: Sequence[ConsumedRecord]) -> None:
        """Have the pipeline's grain admit ``records`` (its own, in offset order), retrying
        with backoff until it does; StaleEpoch if the grain was claimed elsewhere."""
        stats = self.pipelines.setdefault(pipeline_id, ForwarderStats())
        fetched = build_batch(pipeline_id, {self.shard: records})
        # The offsets are the shard's, stored by this forwarder, not by the grain; a grain
        # that holds tasks in memory tells when they are written.
        hold = object()
        self._holds[hold] = records[0].offset
        batch = dataclasses.replace(
            fetched.batch, offsets={}, on_written=lambda: self._released(hold)
        )
        result: AdmitResult | None = None
        try:
            result = await self._admit_batch(pipeline_id, stats, fetched, batch, len(records))
        finally:
            if result is None or not result.held:
                self._holds.pop(hold, None)
        if result is None:
            return
        stats.admitted += result.admitted
        stats.duplicates += result.duplicates
        stats.conflicts += result.conflicts
        stats.quarantined += len(fetched.quarantined)

    async def _admit_batch(
        self,
        pipeline_id: str,
        stats: ForwarderStats,
        fetched: Fetched,
        batch: AdmitBatch,
        count: int,
    ) -> AdmitResult | None:
        """``batch`` admitted by the pipeline's grain, with retries; None if it is gone."""
        delay = 0.05
        while True:
            try:
                admit = await self._route(pipeline_id)
                if admit is None:
                    self.stats.dropped += count
                    log.info(
                        "shard %d: %d record(s) of pipeline %s dropped: it is gone",
                        self.shard,
                        count,
                        pipeline_id,
                    )
                    return None
                await self._keep(fetched.quarantined)
                return await admit(batch)
            except StaleEpoch:
                raise
            except Exception as err:  # noqa: BLE001 - any failure: keep the records, back off
                stats.retries += 1
                log.warning(
                    "shard %d: pipeline %s: admission failed (%s: %s); again in %.2fs",
                    self.shard,
                    pipeline_id,
                    type(err).__name__,
                    err,
                    delay,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    def _released(self, hold: object) -> None:
        """A grain wrote the tasks it held of a batch: the stored offset may pass it, now.
        Not at the next batch: a grain that then rests, with no batch coming, would have
        its records replayed to the shard's next owner and be woken by them."""
        self._holds.pop(hold, None)
        if self._reading:  # not once stopped
            self._save_soon(raise_if_fenced=False)

    # -- offsets and lag ------------------------------------------------------------------

    async def _read(self) -> Mapping[int, Sequence[ConsumedRecord]]:
        """The next records; StaleEpoch as soon as a save in the background is fenced,
        even while no record comes."""
        fetch = self._consumer.getmany(
            timeout_ms=int(LAG_INTERVAL_S * 1000), max_records=self._max_records
        )
        if self._saver is None or self._saver.done():
            self._raise_if_fenced()
            return await fetch  # no save under way: nothing to watch beside the read
        reading = asyncio.ensure_future(fetch)
        try:
            while (saver := self._saver) is not None and not saver.done():
                await asyncio.wait({reading, saver}, return_when=asyncio.FIRST_COMPLETED)
                if reading.done():
                    break
            self._raise_if_fenced()
            return await reading
        finally:
            reading.cancel()

    def _raise_if_fenced(self) -> None:
        saver = self._saver
        if saver is not None and saver.done() and not saver.cancelled():
            saver.result()  # StaleEpoch: the only failure ``_save`` lets through

    def _save_soon(self, *, raise_if_fenced: bool = True) -> None:
        """Have the offset stored in the background, unless a save is under way (it goes
        on to the newest offset when it ends). A save that was fenced ends the shard's
        forwarder here (StaleEpoch); with ``raise_if_fenced=False`` (a grain's callback)
        no save starts after one that failed or was cancelled, and the reading loop
        raises."""
        saver = self._saver
        if saver is not None and not saver.done():
            return
        if raise_if_fenced:
            self._raise_if_fenced()
        elif saver is not None and (saver.cancelled() or saver.exception() is not None):
            return
        self._saver = asyncio.create_task(self._save(), name=f"shard {self.shard} offset")

    async def _save(self) -> None:
        """Store the lowest offset some grain may still lack, while it moves."""
        while self._routed is not None:
            next_offset = min([self._routed, *self._stalls.starts(), *self._holds.values()])
            if next_offset == self._saved:
                return
            save = functools.partial(
                self._offsets.save, self.shard, epoch=self._epoch, next_offset=next_offset
            )
            await self._retrying("offset", save)
            self._saved = next_offset
            try:
                await self._consumer.commit({self.shard: next_offset})
            except Exception as err:  # noqa: BLE001 - Kafka's copy is informational only
                log.info("shard %d: offset commit failed: %s", self.shard, err)

    async def _update_lag(self) -> None:
        try:
            ends = await self._consumer.end_offsets([self.shard])
            position = await self._consumer.position(self.shard)
            self.stats.lag = max(0, ends[self.shard] - position)
        except Exception as err:  # noqa: BLE001 - lag is a metric, not a reason to stop
            log.debug("shard %d: lag unavailable: %s", self.shard, err)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = 0.05
        while True:
            try:
                return await call()
            except StaleEpoch:
                raise
            except Exception as err:  # noqa: BLE001 - the store or broker away: wait
                log.warning(
                    "shard %d: %s failed (%s: %s); again in %.2fs",
                    self.shard,
                    what,
                    type(err).__name__,
                    err,
                    delay,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max_s)


class ShardForwarders:
    """The running forwarders of a replica's owned shards."""

    def __init__(self, *, make: Callable[[int], ShardForwarder]) -> None:
        self._make = make
        self._running: dict[int, tuple[ShardForwarder, asyncio.Task[None]]] = {}

    def running(self) -> set[int]:
        return set(self._running)

    def forwarders(self) -> dict[int, ShardForwarder]:
        return {shard: running[0] for shard, running in self._running.items()}

    def start(self, shard: int) -> None:
        forwarder = self._make(shard)
        task = asyncio.create_task(forwarder.run(), name=f"shard forwarder {shard}")
        task.add_done_callback(lambda _: self._ended(shard, task))
        self._running[shard] = (forwarder, task)

    async def stop(self, shard: int) -> None:
        running = self._running.pop(shard, None)
        if running is not None:
            running[1].cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running[1]

    def _ended(self, shard: int, task: asyncio.Task[None]) -> None:
        current = self._running.get(shard)
        if current is None or current[1] is not task or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("shard %d: forwarder failed: %r", shard, error)
        # Fenced or failed: the replica's next reconcile starts it again if the shard is
        # still its own (it claims the shard anew and resumes from the stored offset).
        del self._running[shard]
