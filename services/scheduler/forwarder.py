"""Forwarders: feed a pipeline's grain from the partitions of the pipeline's topic.

One consumer per grain, with the topic's partitions assigned by hand (no consumer group
rebalancing: placement decides who owns the grain). Each batch is decoded, bad records
are quarantined, and the rest is admitted by the grain in one fenced transaction that
also records the next offsets; only then are the offsets committed to Kafka (for lag
metrics; the offsets in the store are what a new owner resumes from). When the grain
pushes back (store down), the batch is retried with backoff and nothing more is fetched.

The consumer is a ``PartitionConsumer`` (``services/kafka/consumer.py``): the host gives a
Kafka one, unit tests an in-memory one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from actors.pipeline.model import AdmitBatch, AdmitResult, NewTask, Purge
from actors.pipeline.ports import StaleEpoch
from services.kafka.consumer import ConsumedRecord, PartitionConsumer
from services.scheduler.decode import (
    CancelEvent,
    RequeueEvent,
    ScheduleChangedEvent,
    Undecodable,
    decode,
)
from services.store.quarantine import Quarantined

log = logging.getLogger("wsched.scheduler.forwarder")

Admit = Callable[[AdmitBatch], Awaitable[AdmitResult]]
Keep = Callable[[Sequence[Quarantined]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
#: How often the lag metric is refreshed, in seconds.
LAG_INTERVAL_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Fetched:
    """One fetch, decoded: the batch for the grain, and the records kept aside beside it."""

    batch: AdmitBatch
    quarantined: tuple[Quarantined, ...] = ()


def build_batch(pipeline_id: str, records: Mapping[int, Sequence[ConsumedRecord]]) -> Fetched:
    new: list[NewTask] = []
    cancels: list[str] = []
    requeues: list[str] = []
    schedules: dict[str, None] = {}  # ordered, each once
    purges: list[Purge] = []
    quarantined: list[Quarantined] = []
    offsets: dict[int, int] = {}
    for partition, items in records.items():
        for record in items:
            event = decode(
                record.value,
                pipeline_id=pipeline_id,
                timestamp_ms=record.timestamp_ms,
                trace_parent=record.trace_parent,
            )
            if isinstance(event, NewTask):
                new.append(event)
            elif isinstance(event, CancelEvent):
                cancels.append(event.task_id)
            elif isinstance(event, RequeueEvent):
                requeues.append(event.task_id)
            elif isinstance(event, ScheduleChangedEvent):
                schedules[event.schedule_id] = None
            elif isinstance(event, Purge):
                purges.append(event)
            else:
                quarantined.append(_quarantined(pipeline_id, record, event))
            offsets[partition] = record.offset + 1
    batch = AdmitBatch(
        new=tuple(new),
        cancels=tuple(cancels),
        requeues=tuple(requeues),
        schedules=tuple(schedules),
        purges=tuple(purges),
        offsets=offsets,
    )
    return Fetched(batch=batch, quarantined=tuple(quarantined))


def _quarantined(pipeline_id: str, record: ConsumedRecord, bad: Undecodable) -> Quarantined:
    log.warning(
        "pipeline %s: quarantined record %s@%d: %s",
        pipeline_id,
        record.partition,
        record.offset,
        bad.reason,
    )
    return Quarantined(
        pipeline_id=pipeline_id,
        partition=record.partition,
        offset=record.offset,
        reason=bad.reason,
        raw=bad.raw,
    )


@dataclass(kw_only=True)
class ForwarderStats:
    admitted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    retries: int = 0
    lag: dict[int, int] = field(default_factory=dict)


class Forwarder:
    def __init__(
        self,
        *,
        consumer: PartitionConsumer,
        pipeline_id: str,
        partitions: int,
        admit: Admit,
        keep: Keep,
        max_records: int = 5000,
        retry_max_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``sleep`` and ``monotonic`` pace the retries and the lag metric (tests inject
        them); ``consumer`` reads the pipeline's topic, started and stopped by ``run``."""
        self.pipeline_id = pipeline_id
        self._consumer = consumer
        self._partitions = list(range(partitions))
        self._admit = admit
        self._keep = keep
        self._max_records = max_records
        self._retry_max_s = retry_max_s
        self._sleep = sleep
        self._monotonic = monotonic
        self.stats = ForwarderStats()
        self._lag_due = 0.0
        #: Kafka's copy of the offsets and the lag metric are kept in the background:
        #: the next batch does not wait for their broker requests.
        self._committing: asyncio.Task[None] | None = None
        self._uncommitted: dict[int, int] = {}
        self._lag_reader: asyncio.Task[None] | None = None

    async def run(self, start: Mapping[int, int]) -> None:
        """Forward until cancelled or the grain is fenced. ``start``: offsets from the store."""
        await self._consumer.start()
        try:
            self._consumer.assign(self._partitions)
            for partition in self._partitions:
                if partition in start:
                    self._consumer.seek(partition, start[partition])
            while True:
                # Records wake it at once; the timeout only paces the lag metric (a shared
                # reader's view waits in memory, so an idle grain costs one wake-up here).
                records = await self._consumer.getmany(
                    timeout_ms=int(LAG_INTERVAL_S * 1000), max_records=self._max_records
                )
                if records:
                    await self._forward(build_batch(self.pipeline_id, records))
                if self._monotonic() >= self._lag_due:
                    self._lag_due = self._monotonic() + LAG_INTERVAL_S
                    if self._lag_reader is None or self._lag_reader.done():
                        self._lag_reader = asyncio.create_task(self._update_lag())
        except StaleEpoch:
            log.info("pipeline %s: grain fenced, forwarder stops", self.pipeline_id)
        finally:
            for task in (self._committing, self._lag_reader):
                if task is not None:
                    task.cancel()
            await self._consumer.stop()

    async def _forward(self, fetched: Fetched) -> None:
        delay = 0.05
        while True:
            try:
                await self._keep(fetched.quarantined)
                result = await self._admit(fetched.batch)
                break
            except StaleEpoch:
                raise
            except Exception as err:  # noqa: BLE001 - any failure: keep the batch, back off
                self.stats.retries += 1
                log.warning(
                    "pipeline %s: admission failed (%s: %s); retrying in %.2fs",
                    self.pipeline_id,
                    type(err).__name__,
                    err,
                    delay,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
        self.stats.admitted += result.admitted
        self.stats.duplicates += result.duplicates
        self.stats.conflicts += result.conflicts
        self.stats.quarantined += len(fetched.quarantined)
        self._uncommitted.update(fetched.batch.offsets)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        """Commit the newest offsets to Kafka until none are left (its copy is for
        Kafka's lag tooling only: a grain resumes from the offsets stored with it)."""
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            try:
                await self._consumer.commit(offsets)
            except Exception as err:  # noqa: BLE001 - Kafka's copy is informational only
                log.info("pipeline %s: offset commit failed: %s", self.pipeline_id, err)

    async def _update_lag(self) -> None:
        try:
            ends = await self._consumer.end_offsets(self._partitions)
            for partition in self._partitions:
                position = await self._consumer.position(partition)
                self.stats.lag[partition] = max(0, ends[partition] - position)
        except Exception as err:  # noqa: BLE001 - lag is a metric, not a reason to stop
            log.debug("pipeline %s: lag unavailable: %s", self.pipeline_id, err)
