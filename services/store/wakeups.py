"""The wake-up index (design D4): resting grains, and when each must be active again.

A grain that deactivates holding timers or schedules writes its wake-up into its fencing
row (``fencing.rest``: ``shard``, ``wake_at``); its next claim clears both. A scheduler
replica reads the due rows of the shards it owns once a second (``due``, one range read
of ``ix_grain_owners_wake``) and activates those grains. The API moves a resting grain's
wake-up to now when it changes one of its schedules (``nudge``): the grain then reads the
new definition even if the ``ScheduleChanged`` record that says so was never produced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from actors.pipeline.model import GrainKey, InvalidGrainKey
from services.store.schema import grain_owners
from services.store.sql import chunks, from_db_required, to_db


@dataclass(frozen=True)
class WakeUp:
    grain: GrainKey
    #: As stored: ``forget`` clears the row only while it still says this.
    wake_at: dt.datetime


def due(
    conn: sa.Connection,
    *,
    shards: Collection[int],
    now: dt.datetime,
    limit: int,
    after: WakeUp | None = None,
) -> list[WakeUp]:
    """The wake-ups of ``shards`` due at ``now``, soonest first, at most ``limit``;
    ``after``: the last of the previous page."""
    if not shards:
        return []
    query = sa.select(grain_owners.c.grain_id, grain_owners.c.wake_at).where(
        grain_owners.c.shard.in_(sorted(shards)),
        grain_owners.c.wake_at <= to_db(now),
    )
    if after is not None:
        seen = sa.tuple_(grain_owners.c.wake_at, grain_owners.c.grain_id)
        query = query.where(seen > sa.tuple_(to_db(after.wake_at), str(after.grain)))
    rows = conn.execute(
        query.order_by(grain_owners.c.wake_at, grain_owners.c.grain_id).limit(limit)
    )
    found: list[WakeUp] = []
    for row in rows:
        try:
            grain = GrainKey.parse(row.grain_id)
        except InvalidGrainKey:
            continue  # not a grain's row (a shard's never rests)
        found.append(WakeUp(grain=grain, wake_at=from_db_required(row.wake_at)))
    return found


def forget(conn: sa.Connection, wake_up: WakeUp) -> bool:
    """Clear a wake-up nobody here can act on (its pipeline is not ready), unless it was
    rewritten meanwhile; hosting the pipeline again activates a grain that holds timers
    or schedules and has no wake-up (``PipelineDirectory.with_work``)."""
    cleared = conn.execute(
        sa.update(grain_owners)
        .where(
            grain_owners.c.grain_id == str(wake_up.grain),
            grain_owners.c.wake_at == to_db(wake_up.wake_at),
        )
        .values(wake_at=None, shard=None)
    )
    return cleared.rowcount == 1


def nudge(conn: sa.Connection, *, pipeline_id: str, now: dt.datetime) -> None:
    """Make a resting grain of the pipeline due now (its schedules changed); a grain that
    is active, or rests with nothing to wake for, is left alone (the record reaches it)."""
    conn.execute(
        sa.update(grain_owners)
        .where(
            grain_owners.c.grain_id == str(GrainKey(pipeline_id=pipeline_id)),
            grain_owners.c.wake_at.is_not(None),
        )
        .values(wake_at=to_db(now))
    )


def resting(conn: sa.Connection, pipeline_ids: Sequence[str]) -> set[str]:
    """Those of these pipelines whose grain rests with a wake-up, one statement per 500."""
    found: set[str] = set()
    for chunk in chunks(list(pipeline_ids)):
        keys = [str(GrainKey(pipeline_id=pid)) for pid in chunk]
        rows = conn.execute(
            sa.select(grain_owners.c.grain_id).where(
                grain_owners.c.grain_id.in_(keys), grain_owners.c.wake_at.is_not(None)
            )
        )
        found.update(GrainKey.parse(row.grain_id).pipeline_id for row in rows)
    return found
