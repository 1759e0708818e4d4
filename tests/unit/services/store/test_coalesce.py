"""Calls made while a batch is answered go together in the next one; a lone call goes at
once; failures and missing answers reach every caller of the batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from services.store.coalesce import Batcher, Coalescer


class Store:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def run(self, keys: Sequence[str]) -> Mapping[str, str]:
        self.batches.append(list(keys))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {key: key.upper() for key in keys if key != "missing"}


async def test_a_lone_call_goes_at_once() -> None:
    store = Store()
    assert await Coalescer(store.run).get("a") == "A"
    assert store.batches == [["a"]]


async def test_calls_made_while_a_batch_runs_go_in_the_next_one() -> None:
    store = Store()
    store.gate.clear()
    coalescer: Coalescer[str, str] = Coalescer(store.run, max_batch=3)
    first = asyncio.create_task(coalescer.get("a"))
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.get(key)) for key in ("b", "c", "b", "d")]
    await asyncio.sleep(0)
    assert store.batches == [["a"]]  # the others wait for it
    store.gate.set()
    assert await first == "A"
    assert [await task for task in later] == ["B", "C", "B", "D"]
    # At most three calls per batch; a key asked twice is read once.
    assert store.batches == [["a"], ["b", "c"], ["d"]]
    assert (coalescer.batches, coalescer.keys) == (3, 4)


async def test_a_failed_batch_fails_each_caller_and_the_next_batch_runs() -> None:
    store = Store()
    store.gate.clear()
    store.fail = RuntimeError("down")
    coalescer: Coalescer[str, str] = Coalescer(store.run)
    calls = [asyncio.create_task(coalescer.get(key)) for key in ("a", "b")]
    await asyncio.sleep(0)
    store.gate.set()
    for call in calls:
        with pytest.raises(RuntimeError, match="down"):
            await call
    store.fail = None
    assert await coalescer.get("c") == "C"


async def test_a_key_left_unanswered_is_a_key_error() -> None:
    coalescer: Coalescer[str, str] = Coalescer(Store().run)
    with pytest.raises(KeyError):
        await coalescer.get("missing")


async def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    store = Store()
    store.gate.clear()
    coalescer: Coalescer[str, str] = Coalescer(store.run)
    first = asyncio.create_task(coalescer.get("a"))
    await asyncio.sleep(0)
    gone, kept = (asyncio.create_task(coalescer.get(key)) for key in ("b", "c"))
    await asyncio.sleep(0)
    gone.cancel()
    store.gate.set()
    assert (await first, await kept) == ("A", "C")
    assert store.batches == [["a"], ["c"]]  # nobody waited for b any more


class Writes:
    """Runs a batch of items; an item named "bad" fails on its own."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, items: Sequence[str]) -> list[str | Exception]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [ValueError(item) if item == "bad" else item.upper() for item in items]


async def test_items_sent_while_a_batch_runs_go_together_each_with_its_own_outcome() -> None:
    writes = Writes()
    writes.gate.clear()
    batcher: Batcher[str, str] = Batcher(writes.run, weight=len, max_weight=6)
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    later = [asyncio.create_task(batcher.submit(item)) for item in ("bb", "bad", "bb", "cccccccc")]
    await asyncio.sleep(0)
    writes.gate.set()
    assert await first == "A"
    assert await later[0] == "BB"
    with pytest.raises(ValueError, match="bad"):
        await later[1]
    assert [await later[2], await later[3]] == ["BB", "CCCCCCCC"]
    # Nothing merged; at most a weight of six per batch, unless one item weighs more.
    assert writes.batches == [["a"], ["bb", "bad"], ["bb"], ["cccccccc"]]


async def test_a_batch_that_fails_as_a_whole_fails_each_item() -> None:
    async def down(items: Sequence[str]) -> list[str | Exception]:
        raise ConnectionError("down")

    batcher: Batcher[str, str] = Batcher(down)
    with pytest.raises(ConnectionError):
        await batcher.submit("a")


async def test_with_room_for_two_batches_a_second_call_does_not_wait_for_the_first() -> None:
    writes = Writes()
    writes.gate.clear()
    batcher: Batcher[str, str] = Batcher(writes.run, concurrency=2)
    calls = [asyncio.create_task(batcher.submit(item)) for item in ("a",)]
    await asyncio.sleep(0)
    calls.append(asyncio.create_task(batcher.submit("b")))
    await asyncio.sleep(0)
    calls += [asyncio.create_task(batcher.submit(item)) for item in ("c", "d")]
    await asyncio.sleep(0)
    assert writes.batches == [["a"], ["b"]]  # both running; c and d wait for one of them
    writes.gate.set()
    assert [await call for call in calls] == ["A", "B", "C", "D"]
    assert writes.batches[2:] == [["c", "d"]]


async def test_a_call_right_after_the_last_one_answered_is_not_left_in_the_queue() -> None:
    """The drain that answered the first call has ended when the second arrives, but the
    loop has not yet run its done callback: the second call must start a drain of its own
    (it waited for ever before)."""

    async def answer(keys: Sequence[str]) -> Mapping[str, str]:
        return {key: key.upper() for key in keys}

    coalescer: Coalescer[str, str] = Coalescer(answer)
    async with asyncio.timeout(1):  # not wait_for: its extra task would hide the race
        for key in ("a", "b", "c"):
            assert await coalescer.get(key) == key.upper()
