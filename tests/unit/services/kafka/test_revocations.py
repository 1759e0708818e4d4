"""The records of ``wsched.revocations`` and the in-memory twin of the topic."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from services.kafka.revocations import Forget, MemoryRevocations, decode, encode

UNTIL = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("until", [None, UNTIL])
def test_a_record_reads_back_as_written(until: dt.datetime | None) -> None:
    assert decode(encode("tenant-1", until)) == ("tenant-1", until)


@pytest.mark.parametrize("value", [None, b"", b"tenant-1", b"[]", b'{"until": null}'])
def test_anything_else_is_a_value_error(value: bytes | None) -> None:
    with pytest.raises(ValueError, match="revocation"):
        decode(value)


async def test_every_follower_hears_every_announcement() -> None:
    revocations = MemoryRevocations()
    heard: list[tuple[str, str, dt.datetime | None]] = []

    def follower(name: str) -> Forget:
        return lambda tenant_id, until: heard.append((name, tenant_id, until))

    followers = [asyncio.create_task(revocations.follow(follower(n))) for n in ("a", "b")]
    await asyncio.sleep(0)
    await revocations.announce("t1")
    await revocations.announce("t2", until=UNTIL)
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    assert sorted(heard) == [
        ("a", "t1", None),
        ("a", "t2", UNTIL),
        ("b", "t1", None),
        ("b", "t2", UNTIL),
    ]
    await revocations.announce("t3")  # no follower left: nobody hears it
    assert len(heard) == 4
