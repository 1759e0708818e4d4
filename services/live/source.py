"""Reading ``wsched.events``: the port the API's live results read through, and its twin.

Two reads: ``follow`` delivers every record from the topic's end onwards (one per API
process, no consumer group: each process needs every event, and a group would share
them out); ``replay`` reads one partition's past, for an SSE client resuming with
``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from services.live.wire import EVENTS_PARTITIONS, LiveEvent

_POSITION_RE = re.compile(r"(\d{1,6}):(\d{1,19})")


@dataclass(frozen=True, kw_only=True, order=True)
class Position:
    """Where a record sits in the events topic; its text is the SSE event id."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """``<partition>:<offset>``; a ValueError for anything else."""
        match = _POSITION_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{text[:64]!r} is not '<partition>:<offset>'")
        return cls(partition=int(match[1]), offset=int(match[2]))


@dataclass(frozen=True, kw_only=True)
class Delivered:
    position: Position
    event: LiveEvent


Deliver = Callable[[Delivered], None]
#: Whether a pipeline's records are wanted, by its id as the records' key (UTF-8).
Wants = Callable[[bytes], bool]


def every_pipeline(_key: bytes) -> bool:
    return True


class EventSource(Protocol):
    async def follow(self, deliver: Deliver, *, wants: Wants = every_pipeline) -> None:
        """Call ``deliver`` for every record from the topic's end on whose pipeline
        ``wants`` takes (the others are skipped undecoded); runs until cancelled."""
        ...

    async def end_offset(self, partition: int) -> int:
        """The offset the next record of ``partition`` will get."""
        ...

    def replay(self, partition: int, start: int, end: int) -> AsyncIterator[Delivered]:
        """The records of ``partition`` from ``start`` (or the oldest kept) up to ``end``."""
        ...


class MemoryEventLog:
    """The :class:`EventSource` in memory, for unit tests: ``append`` is the grains' side.

    Partitions by a hash of the pipeline id like Kafka's keyed records, so one pipeline's
    events keep their order; ``forget`` drops the oldest records, as retention does.
    """

    def __init__(self, *, partitions: int = EVENTS_PARTITIONS) -> None:
        self._logs: list[list[LiveEvent]] = [[] for _ in range(partitions)]
        self._starts = [0] * partitions
        self._followers: list[tuple[Deliver, Wants]] = []
        self.following = asyncio.Event()

    def partition_of(self, pipeline_id: str) -> int:
        return zlib.crc32(pipeline_id.encode()) % len(self._logs)

    def append(self, event: LiveEvent) -> Position:
        partition = self.partition_of(event.pipeline_id)
        log = self._logs[partition]
        log.append(event)
        position = Position(partition=partition, offset=self._starts[partition] + len(log) - 1)
        key = event.pipeline_id.encode()
        for deliver, wants in list(self._followers):
            if wants(key):
                deliver(Delivered(position=position, event=event))
        return position

    def forget(self, partition: int, count: int) -> None:
        del self._logs[partition][:count]
        self._starts[partition] += count

    async def follow(self, deliver: Deliver, *, wants: Wants = every_pipeline) -> None:
        follower = (deliver, wants)
        self._followers.append(follower)
        self.following.set()
        try:
            await asyncio.Event().wait()
        finally:
            self._followers.remove(follower)

    async def end_offset(self, partition: int) -> int:
        return self._starts[partition] + len(self._logs[partition])

    async def replay(self, partition: int, start: int, end: int) -> AsyncIterator[Delivered]:
        first = self._starts[partition]
        for offset in range(max(start, first), end):
            event = self._logs[partition][offset - first]
            yield Delivered(position=Position(partition=partition, offset=offset), event=event)
