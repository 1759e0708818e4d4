"""Reading a pipeline's topic: the port a forwarder consumes through, over Kafka or in memory.

A forwarder needs little of a consumer: its topic's partitions assigned by hand (placement,
not a consumer group, decides who reads), a seek to the offsets stored with the grain,
batches of records, a commit of what was admitted (for lag tooling only), the end offsets
and positions for the lag metric, and pausing a partition (for a grain that stalls).
:class:`PartitionConsumer` is that much, over one topic, with partitions as plain numbers
and records as our own :class:`ConsumedRecord`, so the forwarder imports no Kafka client.
Over Kafka, a view of the replica's one shared consumer implements it
(``shared.py``: ``SharedPartitionConsumer``); :class:`MemoryConsumer` over a
:class:`MemoryLog`, for unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import ConsumerRecord

from services.placement import PIPELINE_HEADER


@dataclass(frozen=True, kw_only=True)
class ConsumedRecord:
    partition: int
    offset: int
    #: ``None`` for a tombstone.
    value: bytes | None
    timestamp_ms: int
    #: The record's ``traceparent`` header, if any (the task's trace; see
    #: ``services/observability``): the one header a forwarder reads.
    trace_parent: bytes | None = None
    #: The ``wsched-pipeline`` header of a shared topic record: whose it is.
    pipeline_id: str | None = None


class PartitionConsumer(Protocol):
    """One topic's partitions, assigned by hand. Call ``start`` before and ``stop`` after."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions: Collection[int]) -> None:
        """Read these partitions, from the committed offsets (else the earliest)."""
        ...

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on (an assigned partition only)."""
        ...

    def pause(self, partitions: Collection[int]) -> None:
        """Fetch nothing more from these partitions until ``resume``; positions stay."""
        ...

    def resume(self, partitions: Collection[int]) -> None: ...

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> Mapping[int, Sequence[ConsumedRecord]]:
        """Up to ``max_records`` records by partition, in offset order; empty if none came
        within ``timeout_ms``. Advances the positions past what it returns."""
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Record the next offset to read, by partition."""
        ...

    async def end_offsets(self, partitions: Collection[int]) -> Mapping[int, int]:
        """The offset the next appended record of each partition will get."""
        ...

    async def position(self, partition: int) -> int:
        """The offset of the next record ``getmany`` returns from ``partition``."""
        ...


# -- Kafka ----------------------------------------------------------------------------------

#: The W3C trace context header (``services.observability.TRACEPARENT``).
TRACEPARENT = "traceparent"


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    return next((value for key, value in headers or () if key == name), None)


def consumed(partition: int, record: ConsumerRecord[bytes, bytes]) -> ConsumedRecord:
    """An aiokafka record as ours."""
    pipeline = _header(record.headers, PIPELINE_HEADER)
    return ConsumedRecord(
        partition=partition,
        offset=record.offset,
        value=record.value,
        timestamp_ms=record.timestamp,
        trace_parent=_header(record.headers, TRACEPARENT),
        pipeline_id=pipeline.decode(errors="replace") if pipeline is not None else None,
    )


# -- in memory ------------------------------------------------------------------------------


class MemoryLog:
    """A partitioned topic in memory: tests append to it, :class:`MemoryConsumer` reads it.

    ``committed`` holds what consumers committed (one group); ``fail_commits`` makes every
    commit raise, as an unreachable broker would.
    """

    def __init__(self, *, partitions: int) -> None:
        self._partitions: list[list[ConsumedRecord]] = [[] for _ in range(partitions)]
        self.committed: dict[int, int] = {}
        self.fail_commits = False
        self._appended = asyncio.Event()

    def append(
        self,
        partition: int,
        value: bytes | None,
        *,
        timestamp_ms: int = 0,
        pipeline_id: str | None = None,
    ) -> int:
        """Append a record (``pipeline_id``: its ``wsched-pipeline`` header); return its
        offset."""
        records = self._partitions[partition]
        offset = len(records)
        records.append(
            ConsumedRecord(
                partition=partition,
                offset=offset,
                value=value,
                timestamp_ms=timestamp_ms,
                pipeline_id=pipeline_id,
            )
        )
        self._appended.set()
        return offset

    def end_offset(self, partition: int) -> int:
        return len(self._partitions[partition])

    def read(self, partition: int, offset: int, limit: int) -> list[ConsumedRecord]:
        return self._partitions[partition][offset : offset + limit]

    async def wait_appended(self, timeout_s: float) -> None:
        """Return once something is appended, or after ``timeout_s``."""
        self._appended.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), timeout_s)


class MemoryConsumer:
    """:class:`PartitionConsumer` over a :class:`MemoryLog`. ``fetches`` counts the
    ``getmany`` calls, so a test can tell that nothing more was fetched."""

    def __init__(self, *, log: MemoryLog) -> None:
        self.log = log
        self.started = self.stopped = False
        self.fetches = 0
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: Collection[int]) -> None:
        self._positions = {p: self.log.committed.get(p, 0) for p in partitions}
        self._paused &= set(partitions)

    def seek(self, partition: int, offset: int) -> None:
        if partition not in self._positions:
            raise ValueError(f"partition {partition} is not assigned")
        self._positions[partition] = offset

    def pause(self, partitions: Collection[int]) -> None:
        self._paused |= set(partitions) & set(self._positions)

    def resume(self, partitions: Collection[int]) -> None:
        self._paused -= set(partitions)

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[int, list[ConsumedRecord]]:
        self.fetches += 1
        batch = self._take(max_records)
        if not batch:
            await self.log.wait_appended(timeout_ms / 1000)
            batch = self._take(max_records)
        return batch

    def _take(self, max_records: int) -> dict[int, list[ConsumedRecord]]:
        batch: dict[int, list[ConsumedRecord]] = {}
        room = max_records
        for partition in sorted(set(self._positions) - self._paused):
            records = self.log.read(partition, self._positions[partition], room)
            if records:
                batch[partition] = records
                self._positions[partition] = records[-1].offset + 1
                room -= len(records)
        return batch

    async def commit(self, offsets: Mapping[int, int]) -> None:
        if self.log.fail_commits:
            raise ConnectionError("the in-memory broker refuses commits")
        self.log.committed.update(offsets)

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        return {p: self.log.end_offset(p) for p in partitions}

    async def position(self, partition: int) -> int:
        return self._positions[partition]
