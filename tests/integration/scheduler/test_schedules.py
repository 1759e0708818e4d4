"""Schedules on real Kafka and TiDB: fired by the pipeline's grain on time, one task per
nominal fire time across a kill -9 of the owner, a restart of every replica and a
SIGSTOPped ex-owner; definitions changed through the store and a change record."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from typing import Any

import pytest
import sqlalchemy as sa

from actors.pipeline.schedules import ScheduleState, format_fire
from protos.wsched.v1 import worker_pb2
from services.kafka.producer import KafkaProducer
from services.placement import Route
from services.scheduler.host import SchedulerHost
from services.store.control import ControlStore, ScheduleRecord
from services.store.schema import schedule_state, tasks
from tests.integration.scheduler.cluster import Replica
from tests.integration.scheduler.conftest import (
    ReadyPipeline,
    create_ready_pipeline,
    stub,
    wait_hosted,
)
from tests.integration.scheduler.test_failover import owners, wait_for

pytestmark = pytest.mark.integration

#: Every second, catching up every fire time of the last hour: nothing may be missed.
EVERY_SECOND: dict[str, Any] = {
    "every_s": 1.0,
    "timezone": "UTC",
    "data_json": '{"tick":true}',
    "catchup": {"window_s": 3600.0, "policy": "all", "after_pause": False},
}


@pytest.fixture
def control(engine: sa.Engine) -> ControlStore:
    return ControlStore(engine=engine)


async def define(
    control: ControlStore,
    producer: KafkaProducer,
    pipeline: ReadyPipeline,
    doc: dict[str, Any],
    *,
    name: str = "tick",
) -> ScheduleRecord:
    """What the API does: write the definition, then tell the grain."""
    record = control.create_schedule(
        pipeline_id=pipeline.id,
        name=name,
        spec={**doc, "created_at": dt.datetime.now(dt.UTC).isoformat()},
        paused=False,
    )
    await producer.schedule_changed(Route(pipeline.id), record.id, record.version)
    return record


def runs(engine: sa.Engine, pipeline_id: str, schedule_id: str) -> list[tuple[str, dt.datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.fire_at)
            .where(tasks.c.pipeline_id == pipeline_id, tasks.c.schedule_id == schedule_id)
            .order_by(tasks.c.fire_at)
        ).all()
    return [(row.id, row.fire_at.replace(tzinfo=dt.UTC)) for row in rows]


def state(engine: sa.Engine, schedule_id: str) -> ScheduleState | None:
    with engine.connect() as conn:
        text = conn.execute(
            sa.select(schedule_state.c.state_json).where(
                schedule_state.c.schedule_id == schedule_id
            )
        ).scalar_one_or_none()
    return ScheduleState.from_doc(json.loads(text)) if text else None


def assert_every_second_once(found: list[tuple[str, dt.datetime]], schedule_id: str) -> None:
    """One task per fire time, named by it, with no fire time missing in between."""
    times = [fire for _, fire in found]
    assert len(times) == len(set(times)), "a fire time made two tasks"
    assert [task_id for task_id, _ in found] == [f"{schedule_id}@{format_fire(t)}" for t in times]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap == 1 for gap in gaps), f"fire times missing: gaps {sorted(set(gaps))}"


async def test_runs_are_handed_out_within_a_second_of_their_fire_time(
    host: SchedulerHost,
    pipeline: ReadyPipeline,
    producer: KafkaProducer,
    control: ControlStore,
    engine: sa.Engine,
) -> None:
    await wait_hosted(host, pipeline.id)
    record = await define(control, producer, pipeline, EVERY_SECOND)
    channel, worker = stub(host)
    lateness: list[float] = []
    async with channel:
        while len(lateness) < 5:
            reply = await worker.Poll(
                worker_pb2.PollRequest(
                    pipeline_id=pipeline.id, worker="w", max_tasks=10, wait_ms=3000
                ),
                metadata=(("authorization", f"Bearer {pipeline.token}"),),
            )
            now = time.time()
            for leased in reply.tasks:
                assert leased.task_id.startswith(f"{record.id}@")
                assert leased.fire_at_ms > 0
                assert leased.data == b'{"tick":true}'
                lateness.append(now - leased.fire_at_ms / 1000)
    # The first may wait for the change record; the ones after it are fired on time.
    assert max(lateness[1:]) < 1.0, lateness
    paused = control.update_schedule(record, paused=True)
    await producer.schedule_changed(Route(pipeline.id), paused.id, paused.version)
    await asyncio.sleep(1.5)
    before = runs(engine, pipeline.id, record.id)
    await asyncio.sleep(3)
    assert runs(engine, pipeline.id, record.id) == before, "a paused schedule fired"
    assert_every_second_once(before, record.id)


async def wait_runs(engine: sa.Engine, pipeline_id: str, schedule_id: str, count: int) -> None:
    async def enough() -> bool:
        return len(runs(engine, pipeline_id, schedule_id)) >= count

    await wait_for(enough, timeout_s=90, what=f"{count} runs of the schedule")


async def owner_of(engine: sa.Engine, pipeline: ReadyPipeline) -> str | None:
    return (await owners(engine, [pipeline])).get(pipeline.id)


async def firing(
    replicas: list[Replica],
    engine: sa.Engine,
    kafka_bootstrap: str,
    producer: KafkaProducer,
    control: ControlStore,
) -> tuple[ReadyPipeline, ScheduleRecord, Replica]:
    """Replicas running an every-second schedule that has fired; and its owner."""
    pipeline = await create_ready_pipeline(engine, kafka_bootstrap)
    for replica in replicas:
        replica.start()
    record = await define(control, producer, pipeline, EVERY_SECOND)
    await wait_runs(engine, pipeline.id, record.id, 3)
    owner = await owner_of(engine, pipeline)
    return pipeline, record, next(r for r in replicas if r.address == owner)


async def wait_moved(engine: sa.Engine, pipeline: ReadyPipeline, away_from: Replica) -> None:
    async def moved() -> bool:
        return await owner_of(engine, pipeline) not in (None, away_from.address)

    await wait_for(moved, timeout_s=90, what="the schedule's grain to move")


async def test_fire_times_survive_a_kill_9_and_a_restart_of_every_replica(
    replicas: list[Replica],
    engine: sa.Engine,
    kafka_bootstrap: str,
    producer: KafkaProducer,
    control: ControlStore,
) -> None:
    pipeline, record, victim = await firing(replicas, engine, kafka_bootstrap, producer, control)
    victim.kill()
    fired = len(runs(engine, pipeline.id, record.id))
    await wait_moved(engine, pipeline, victim)
    await wait_runs(engine, pipeline.id, record.id, fired + 5)
    for replica in replicas:
        replica.stop()
    fired = len(runs(engine, pipeline.id, record.id))
    await asyncio.sleep(3)  # fire times while nobody runs: caught up on restart
    for replica in replicas:
        replica.start()
    await wait_runs(engine, pipeline.id, record.id, fired + 8)

    found = runs(engine, pipeline.id, record.id)
    assert_every_second_once(found, record.id)
    # The down time is caught up, not skipped: the runs reach back to the first one.
    final = state(engine, record.id)
    assert final is not None
    assert final.missed == 0
    assert final.fired >= len(found) - 2  # a flush may be in flight while we read


async def test_a_sigstopped_ex_owner_fires_nothing_once_resumed(
    replicas: list[Replica],
    engine: sa.Engine,
    kafka_bootstrap: str,
    producer: KafkaProducer,
    control: ControlStore,
) -> None:
    pipeline, record, paused = await firing(replicas, engine, kafka_bootstrap, producer, control)
    paused.pause()
    await wait_moved(engine, pipeline, paused)
    fired = len(runs(engine, pipeline.id, record.id))
    await wait_runs(engine, pipeline.id, record.id, fired + 3)
    paused.resume()  # its timers are long due: it tries to fire them, fenced
    await asyncio.sleep(4)
    found = runs(engine, pipeline.id, record.id)
    assert_every_second_once(found, record.id)
    assert "lost ownership" in paused.log(), "the ex-owner never tried its stale write"


async def test_a_schedule_whose_record_was_lost_is_found_by_the_replicas_one_read(
    host: SchedulerHost,
    pipeline: ReadyPipeline,
    control: ControlStore,
    engine: sa.Engine,
) -> None:
    """The API crashed between its write and its ``ScheduleChanged`` record: the replica's
    comparison of every grain's versions (one read for all) finds the schedule, and the
    grain fires it; grains that hold the stored versions are not told anything."""
    await wait_hosted(host, pipeline.id)
    assert await host.resync_schedules() == 0  # nothing stored, nothing held
    record = control.create_schedule(
        pipeline_id=pipeline.id,
        name="lost",
        spec={**EVERY_SECOND, "created_at": dt.datetime.now(dt.UTC).isoformat()},
        paused=False,
    )  # and no record on the topic
    await asyncio.sleep(1.0)
    assert runs(engine, pipeline.id, record.id) == [], "fired with no record and no resync"
    assert await host.resync_schedules() == 1
    await wait_runs(engine, pipeline.id, record.id, 2)
    assert_every_second_once(runs(engine, pipeline.id, record.id), record.id)

    async def held() -> bool:
        return await host.resync_schedules() == 0  # published: versions equal now

    await wait_for(held, timeout_s=10, what="the grain to publish the schedule's version")
