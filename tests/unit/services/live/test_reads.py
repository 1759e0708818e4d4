"""Waiters' reads of task rows share statements: one per pipeline per round."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.live.reads import BatchedReads


class Store:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = False

    async def read_many(self, pipeline_id: str, ids: Sequence[str]) -> dict[str, str]:
        self.calls.append((pipeline_id, list(ids)))
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("database down")
        return {i: f"{pipeline_id}/{i}" for i in ids if i != "missing"}


async def test_reads_asked_together_share_one_statement_per_pipeline() -> None:
    store = Store()
    reads = BatchedReads(store.read_many)
    got = await asyncio.gather(
        reads.read("p", "a"), reads.read("p", "b"), reads.read("q", "a"), reads.read("p", "a")
    )
    assert list(got) == ["p/a", "p/b", "q/a", "p/a"]
    assert sorted(store.calls) == [("p", ["a", "b"]), ("q", ["a"])]


async def test_reads_asked_meanwhile_go_in_the_next_statement() -> None:
    store = Store()
    reads = BatchedReads(store.read_many, max_batch=2)
    first = asyncio.gather(*(reads.read("p", i) for i in ("a", "b", "c")))
    await asyncio.sleep(0.001)
    later = reads.read("p", "missing")
    assert await first == ["p/a", "p/b", "p/c"]
    assert await later is None
    assert [ids for _, ids in store.calls] == [["a", "b"], ["c"], ["missing"]]


async def test_a_failed_statement_fails_each_of_its_reads() -> None:
    store = Store()
    store.fail = True
    reads = BatchedReads(store.read_many)
    with pytest.raises(ConnectionError):
        await reads.read("p", "a")
    store.fail = False
    assert await reads.read("p", "a") == "p/a"
