"""The records of ``wsched.revocations`` and the in-memory twin of the topic."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from services.kafka.revocations import (
    Forget,
    KeysChanged,
    MemoryRevocations,
    Revocation,
    TokenRotated,
    decode,
    encode,
)

UNTIL = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "revocation",
    [
        KeysChanged(tenant_id="tenant-1"),
        KeysChanged(tenant_id="tenant-1", until=UNTIL),
        TokenRotated(pipeline_id="pipeline-1"),
    ],
)
def test_a_record_reads_back_as_written(revocation: Revocation) -> None:
    assert decode(encode(revocation)) == revocation


def test_a_rotated_token_names_no_tenant() -> None:
    """An API process of the previous version reads ``tenant`` and skips the record
    without it: it must never take a token's rotation for a revocation of keys."""
    assert encode(TokenRotated(pipeline_id="p1")) == b'{"pipeline":"p1"}'


@pytest.mark.parametrize("value", [None, b"", b"tenant-1", b"[]", b'{"until": null}'])
def test_anything_else_is_a_value_error(value: bytes | None) -> None:
    with pytest.raises(ValueError, match="revocation"):
        decode(value)


async def test_every_follower_hears_every_announcement_of_its_kind() -> None:
    revocations = MemoryRevocations()
    heard: list[tuple[str, str, dt.datetime | None]] = []

    def follower(name: str) -> Forget:
        return lambda tenant_id, until: heard.append((name, tenant_id, until))

    followers = [asyncio.create_task(revocations.follow(follower(n))) for n in ("a", "b")]
    followers.append(
        asyncio.create_task(
            revocations.follow_rotations(lambda p: heard.append(("replica", p, None)))
        )
    )
    await asyncio.sleep(0)
    await revocations.announce("t1")
    await revocations.announce("t2", until=UNTIL)
    await revocations.announce_rotation("p1")
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    assert sorted(heard) == [
        ("a", "t1", None),
        ("a", "t2", UNTIL),
        ("b", "t1", None),
        ("b", "t2", UNTIL),
        ("replica", "p1", None),
    ]
    await revocations.announce("t3")  # no follower left: nobody hears it
    assert len(heard) == 5
