"""The backlog gauge: one reading per ``max_age_s``, plus what this process accepted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.quotas import BacklogGauge, QuotaStoreUnavailable


@dataclass
class Reader:
    values: list[int | None] = field(default_factory=list)
    reads: int = 0

    async def __call__(self, tenant_id: str) -> int:
        value = self.values[min(self.reads, len(self.values) - 1)]
        self.reads += 1
        if value is None:
            raise QuotaStoreUnavailable("down")
        return value


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_reading_serves_until_it_is_old_and_counts_what_was_accepted() -> None:
    read, clock = Reader([100, 40]), Clock()
    gauge = BacklogGauge(read=read, clock=clock, max_age_s=1.0)
    assert await gauge.current("t") == 100
    gauge.added("t", 5)
    clock.now = 0.5
    assert await gauge.current("t") == 105
    assert read.reads == 1
    clock.now = 1.5
    assert await gauge.current("t") == 40  # a fresh reading replaces what was added
    assert read.reads == 2


async def test_a_failed_read_keeps_the_last_reading() -> None:
    read, clock = Reader([70, None]), Clock()
    gauge = BacklogGauge(read=read, clock=clock, max_age_s=1.0)
    assert await gauge.current("t") == 70
    gauge.added("t", 3)
    clock.now = 2.0
    assert await gauge.current("t") == 73
    assert read.reads == 2


async def test_never_read_and_unreachable_counts_as_empty() -> None:
    gauge = BacklogGauge(read=Reader([None]), clock=Clock(), max_age_s=1.0)
    assert await gauge.current("t") == 0


async def test_a_reading_past_half_its_age_is_read_again_while_it_answers() -> None:
    read, clock = Reader([100, 40]), Clock()
    gauge = BacklogGauge(read=read, clock=clock, max_age_s=1.0)
    assert await gauge.current("t") == 100
    gauge.added("t", 5)
    clock.now = 0.6
    # Answered from the reading at once; the read ahead runs in the background.
    assert await gauge.current("t") == 105
    assert read.reads == 1
    await asyncio.sleep(0)  # the read ahead runs
    gauge.added("t", 2)  # accepted after the read: not in what it read
    assert await gauge.current("t") == 42
    assert read.reads == 2
    clock.now = 0.9  # the new reading is young: nothing more is read
    assert await gauge.current("t") == 42
    assert read.reads == 2
