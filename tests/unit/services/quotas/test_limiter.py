"""The submit limiter: slices drawn from a shared bucket, held briefly, spent locally.

Two limiters over one :class:`MemoryBuckets` stand for two API processes over the
database's bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.quotas import Draw, MemoryBuckets, Quotas, QuotaStoreUnavailable, SubmitLimiter


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def quotas(rate: float | None, burst: int | None = None) -> Quotas:
    return Quotas(
        max_pipelines=None,
        max_backlog=None,
        submit_rate=rate,
        submit_burst=burst,
        max_request_bytes=None,
    )


class CountingBuckets(MemoryBuckets):
    def __init__(self) -> None:
        super().__init__()
        self.draws = 0

    async def draw(
        self, tenant_id: str, *, rate: float, burst: int, now_s: float, need: int, want: int
    ) -> Draw:
        self.draws += 1
        return await super().draw(
            tenant_id, rate=rate, burst=burst, now_s=now_s, need=need, want=want
        )


class DownBuckets:
    async def draw(
        self, tenant_id: str, *, rate: float, burst: int, now_s: float, need: int, want: int
    ) -> Draw:
        raise QuotaStoreUnavailable("database down")


def limiter(shared: object, clock: Clock) -> SubmitLimiter:
    return SubmitLimiter(shared=shared, clock=clock, wall=clock)  # type: ignore[arg-type]


async def test_an_unbounded_rate_never_draws() -> None:
    shared, clock = CountingBuckets(), Clock()
    assert await limiter(shared, clock).acquire("t", quotas(None), 10_000) == 0.0
    assert shared.draws == 0


async def test_a_slice_serves_many_submits_with_one_draw() -> None:
    shared, clock = CountingBuckets(), Clock()
    mine = limiter(shared, clock)
    q = quotas(100.0, burst=100)  # slice: 0.1 s of the rate, 10 tokens
    for _ in range(10):
        assert await mine.acquire("t", q, 1) == 0.0
    assert shared.draws == 1
    assert await mine.acquire("t", q, 1) == 0.0
    assert shared.draws == 2


async def test_two_processes_together_never_pass_the_burst_then_the_rate() -> None:
    shared, clock = MemoryBuckets(), Clock()
    one, two = limiter(shared, clock), limiter(shared, clock)
    q = quotas(10.0, burst=20)
    granted = 0
    for second in range(10):
        for step in range(20):  # each process tries 4 submits every 50 ms
            clock.now = 1000.0 + second + step * 0.05
            for process in (one, two):
                for _ in range(2):
                    granted += await process.acquire("t", q, 1) == 0.0
    assert granted <= 20 + 10 * 10
    assert granted >= 10 * 10  # and the rate is not starved either


async def test_a_refusal_says_how_long_to_wait_and_answers_locally_until_then() -> None:
    shared, clock = CountingBuckets(), Clock()
    mine = limiter(shared, clock)
    q = quotas(2.0, burst=2)
    assert await mine.acquire("t", q, 2) == 0.0
    wait = await mine.acquire("t", q, 1)
    assert wait == pytest.approx(0.5)
    draws = shared.draws
    clock.now += 0.2
    assert await mine.acquire("t", q, 1) == pytest.approx(0.3)
    assert shared.draws == draws  # no round trip while the bucket is known to be empty
    clock.now += 0.3
    assert await mine.acquire("t", q, 1) == 0.0


async def test_unspent_tokens_are_dropped_after_the_hold() -> None:
    """Held tokens left over are not spent later, so processes holding slices cannot add
    up to more than the rate."""
    shared, clock = CountingBuckets(), Clock()
    # Practically no refill; a slice of the whole bucket.
    mine = SubmitLimiter(shared=shared, clock=clock, wall=clock, slice_s=10_000.0, hold_s=1.0)
    q = quotas(0.001, burst=10)
    assert await mine.acquire("t", q, 1) == 0.0  # draws all 10, holds 9
    assert await mine.acquire("t", q, 1) == 0.0
    assert shared.draws == 1
    clock.now += 1.5
    assert await mine.acquire("t", q, 1) > 0  # the 8 held were dropped; the bucket is empty
    assert shared.draws == 2


async def test_a_refund_is_spent_by_the_next_submit() -> None:
    shared, clock = CountingBuckets(), Clock()
    mine = limiter(shared, clock)
    q = quotas(1.0, burst=3)
    assert await mine.acquire("t", q, 3) == 0.0
    mine.refund("t", 3)
    assert await mine.acquire("t", q, 3) == 0.0
    assert shared.draws == 1


async def test_tenants_have_buckets_of_their_own() -> None:
    shared, clock = MemoryBuckets(), Clock()
    mine = limiter(shared, clock)
    q = quotas(1.0, burst=1)
    assert await mine.acquire("a", q, 1) == 0.0
    assert await mine.acquire("a", q, 1) > 0
    assert await mine.acquire("b", q, 1) == 0.0


async def test_with_the_store_down_the_rate_holds_per_process() -> None:
    clock = Clock()
    mine = limiter(DownBuckets(), clock)
    q = quotas(5.0, burst=5)
    results = [await mine.acquire("t", q, 1) for _ in range(6)]
    assert results[:5] == [0.0] * 5
    assert results[5] > 0
