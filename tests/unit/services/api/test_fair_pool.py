"""The database pool takes callers in turn: one caller's backlog never queues another's."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.api.fair_pool import CALLER, FairPool


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2)


async def calls_in_order(pool: FairPool, callers: list[int]) -> list[int]:
    """Start one call per entry while the single slot is held; the order they ran in."""
    ran: list[int] = []
    gate = threading.Event()

    def held() -> None:
        gate.wait(5)

    async def call(caller: int) -> None:
        CALLER.set(caller)
        await pool.run(ran.append, caller)

    first = asyncio.create_task(pool.run(held))
    await asyncio.sleep(0.01)
    tasks = []
    for caller in callers:
        tasks.append(asyncio.create_task(call(caller)))
        await asyncio.sleep(0)  # queued in this order
    assert pool.waiting == len(callers)
    gate.set()
    await asyncio.gather(first, *tasks)
    return ran


async def test_a_caller_with_one_call_overtakes_anothers_backlog(
    executor: ThreadPoolExecutor,
) -> None:
    pool = FairPool(executor=executor, workers=1)
    order = await calls_in_order(pool, [1, 1, 1, 1, 2])
    assert order.index(2) == 1  # after one of caller 1's, not after all four
    assert order.count(1) == 4


async def test_callers_take_turns(executor: ThreadPoolExecutor) -> None:
    pool = FairPool(executor=executor, workers=1)
    assert await calls_in_order(pool, [1, 1, 1, 2, 2, 3]) == [1, 2, 3, 1, 2, 1]


async def test_free_slots_run_at_once_and_a_cancelled_waiter_passes_its_turn(
    executor: ThreadPoolExecutor,
) -> None:
    pool = FairPool(executor=executor, workers=1)
    gate = threading.Event()
    holding = asyncio.create_task(pool.run(gate.wait, 5))
    await asyncio.sleep(0.01)
    given_up = asyncio.create_task(pool.run(lambda: "never"))
    await asyncio.sleep(0)
    given_up.cancel()
    gate.set()
    assert await holding is True
    assert await asyncio.wait_for(pool.run(lambda: "ran"), 2) == "ran"
    assert given_up.cancelled()
    assert pool.waiting == 0


async def test_errors_reach_the_caller_and_free_the_slot(executor: ThreadPoolExecutor) -> None:
    pool = FairPool(executor=executor, workers=1)

    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await pool.run(boom)
    assert await pool.run(lambda: 7) == 7
