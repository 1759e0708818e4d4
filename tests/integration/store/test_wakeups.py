"""The wake-up index on TiDB and on SQLite: due rows by shard and time, a clear that loses
to a rewrite, the API's nudge, and which pipelines a new owner activates at takeover."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from actors.pipeline.model import GrainKey
from services.placement import shard_of_grain
from services.scheduler.directory import PipelineDirectory
from services.store import wakeups
from services.store.schema import schedules
from services.store.tasks import SqlTaskStore
from services.store.wakeups import WakeUp
from tests.fixtures.rows import insert_pipeline
from tests.ports.task_store import NOW, new

pytestmark = pytest.mark.integration

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def store(engine: sa.Engine) -> SqlTaskStore:
    return SqlTaskStore(engine=engine, clock=lambda: NOW)


async def resting(store: SqlTaskStore, pipeline_id: str, wake_at: dt.datetime) -> GrainKey:
    grain = GrainKey(pipeline_id=pipeline_id)
    epoch = await store.claim(grain=grain, owner="a")
    await store.rest(grain=grain, epoch=epoch, wake_at=wake_at)
    return grain


def due(engine: sa.Engine, shards: set[int], now: dt.datetime, limit: int = 100) -> list[WakeUp]:
    with engine.connect() as conn:
        return wakeups.due(conn, shards=shards, now=now, limit=limit)


async def test_due_wake_ups_of_the_owned_shards_soonest_first(
    engine: sa.Engine, store: SqlTaskStore
) -> None:
    early = await resting(store, "p-early", NOW - HOUR)
    soon = await resting(store, "p-soon", NOW)
    later = await resting(store, "p-later", NOW + HOUR)
    await store.claim(grain=GrainKey(pipeline_id="p-active"), owner="a")  # no wake-up
    shards = {shard_of_grain(g) for g in (early, soon, later)}
    assert [w.grain for w in due(engine, shards, NOW)] == [early, soon]
    assert [w.grain for w in due(engine, shards, NOW, limit=1)] == [early]
    assert due(engine, shards, NOW)[0].wake_at == NOW - HOUR
    # Another replica's shards: none of these.
    others = set(range(64)) - {shard_of_grain(early), shard_of_grain(soon)}
    assert due(engine, others, NOW) == []
    assert [w.grain for w in due(engine, shards, NOW + HOUR)] == [early, soon, later]


async def test_forget_loses_to_a_wake_up_written_since(
    engine: sa.Engine, store: SqlTaskStore
) -> None:
    grain = await resting(store, "p", NOW)
    (seen,) = due(engine, {shard_of_grain(grain)}, NOW)
    await resting(store, "p", NOW - dt.timedelta(seconds=1))  # active again, rested again
    with engine.begin() as conn:
        assert not wakeups.forget(conn, seen)
    assert len(due(engine, {shard_of_grain(grain)}, NOW)) == 1
    (fresh,) = due(engine, {shard_of_grain(grain)}, NOW)
    with engine.begin() as conn:
        assert wakeups.forget(conn, fresh)
    assert due(engine, {shard_of_grain(grain)}, NOW + HOUR) == []


async def test_a_nudge_makes_only_a_resting_grain_due(
    engine: sa.Engine, store: SqlTaskStore
) -> None:
    grain = await resting(store, "p-resting", NOW + HOUR)
    await store.claim(grain=GrainKey(pipeline_id="p-active"), owner="a")
    with engine.begin() as conn:
        wakeups.nudge(conn, pipeline_id="p-resting", now=NOW)
        wakeups.nudge(conn, pipeline_id="p-active", now=NOW)
        wakeups.nudge(conn, pipeline_id="p-unknown", now=NOW)
    all_shards = set(range(64))
    assert [(w.grain, w.wake_at) for w in due(engine, all_shards, NOW)] == [(grain, NOW)]
    with engine.connect() as conn:
        assert wakeups.resting(conn, ["p-resting", "p-active", "p-unknown"]) == {"p-resting"}


async def test_a_takeover_activates_grains_with_timers_unless_they_rest(
    engine: sa.Engine, store: SqlTaskStore
) -> None:
    """Tasks to hand out or leases need the grain now; timers or schedules need it only
    if no wake-up will bring it back (its replica died while it was active)."""
    names = ["queued", "timer-active", "timer-resting", "schedule-resting", "empty"]
    for name in names:
        insert_pipeline(engine, name, topic="shared")
    for name, due_in_s in (("queued", 0), ("timer-active", 3600), ("timer-resting", 3600)):
        grain = GrainKey(pipeline_id=name)
        epoch = await store.claim(grain=grain, owner="a")
        await store.admit(
            grain=grain, epoch=epoch, tasks=[new(1, due_in_s=due_in_s)], offsets={}, now=NOW
        )
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schedules).values(
                id="s1",
                pipeline_id="schedule-resting",
                name="s1",
                spec_json="{}",
                paused=False,
                version=1,
                created_at=NOW.replace(tzinfo=None),
                updated_at=NOW.replace(tzinfo=None),
            )
        )
    for name in ("timer-resting", "schedule-resting"):
        grain = GrainKey(pipeline_id=name)
        epoch = await store.claim(grain=grain, owner="a")
        await store.rest(grain=grain, epoch=epoch, wake_at=NOW + HOUR)
    directory = PipelineDirectory(engine=engine, window_tasks=100)
    assert await directory.with_work(names) == {"queued", "timer-active"}
    assert await directory.resting(names) == {"timer-resting", "schedule-resting"}
