"""Offsets of the shared topic's partitions, fenced by their shard (design D3).

A shared pipeline's records are admitted by its own grain (fenced by the grain's epoch),
but the partition they arrive on is the shard's, read by the shard's owner for every
pipeline of the shard: its offset belongs to the shard. The owner claims the fencing row
``shard:<n>`` (in ``grain_owners``, next to the grains') when it takes the shard, and
writes the partition's next offset (in ``grain_offsets``) in a transaction that checks
that epoch, so an ex-owner that was paused while the shard moved writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from services.placement import SHARED_TOPIC
from services.store.fencing import claim_fenced, claim_key, fence_key, in_transaction
from services.store.schema import grain_offsets
from services.store.sql import upsert


def shard_key(shard: int) -> str:
    """The fencing row of a shard (a grain's is ``<pipeline>/<slice>``: no clash)."""
    return f"shard:{shard}"


@dataclasses.dataclass(frozen=True)
class ShardClaim:
    epoch: int
    #: The next offset to read of the shard's partition of the shared topic; None: none
    #: stored yet (read from the start).
    next_offset: int | None


class SqlShardOffsets:
    """Claims of shards and their partition's offset on ``wsched.shared``."""

    topic = SHARED_TOPIC

    def __init__(self, *, engine: sa.Engine, clock: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._clock = clock

    async def claim(self, shard: int, *, owner: str) -> ShardClaim:
        """A new epoch for the shard, and where its partition's reading resumes."""
        key, now = shard_key(shard), self._clock()

        def claim(conn: sa.Connection) -> ShardClaim:
            epoch = claim_key(conn, key=key, owner=owner, now=now)
            stored = conn.execute(
                sa.select(grain_offsets.c.next_offset).where(
                    grain_offsets.c.grain_id == key, grain_offsets.c.topic_partition == shard
                )
            ).scalar()
            return ShardClaim(epoch=epoch, next_offset=None if stored is None else int(stored))

        return await claim_fenced(self._engine, claim, what=f"shard {shard}")

    async def save(self, shard: int, *, epoch: int, next_offset: int) -> None:
        """Store the partition's next offset; ``StaleEpoch`` if the shard moved on."""
        key, now = shard_key(shard), self._clock()

        def save(conn: sa.Connection) -> None:
            fence_key(conn, key=key, epoch=epoch, now=now)
            upsert(
                conn,
                grain_offsets,
                [{"grain_id": key, "topic_partition": shard, "next_offset": next_offset}],
                keys=("grain_id", "topic_partition"),
                update=("next_offset",),
            )

        await in_transaction(self._engine, save)
