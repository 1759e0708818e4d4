"""Resting grains on a real replica (Kafka, TiDB): a grain holding only timers or schedules
deactivates with a wake-up in the store, the replica's wake-up index brings it back in
time to hand its task out on time, a new owner leaves it resting, and a schedule changed
through the store wakes it even without the record that says so."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time

import pytest
import sqlalchemy as sa

from actors.pipeline.actor import Timing
from actors.pipeline.model import GrainKey
from protos.wsched.v1 import worker_pb2
from services.kafka.producer import KafkaProducer, OutgoingTask
from services.placement import Route, TopicMode
from services.scheduler.host import SchedulerHost
from services.settings import Settings
from services.store.control import ControlStore
from services.store.schema import grain_owners
from services.store.sql import from_db
from tests.integration.scheduler.conftest import (
    ReadyPipeline,
    create_ready_pipeline,
    settings_for,
    stub,
    wait_hosted,
)

pytestmark = pytest.mark.integration

#: Fast paces, so that a grain is idle within seconds.
TIMING = Timing(idle_after_s=0.5, idle_tick_s=0.5)


@pytest.fixture
def settings(kafka_bootstrap: str, tidb_url: str, kafka_group: str) -> Settings:
    return settings_for(kafka_bootstrap, tidb_url, kafka_group).model_copy(
        update={"grain_idle_timeout_s": 1.0, "grain_wake_margin_s": 2.0}
    )


def route(pipeline: ReadyPipeline) -> Route:
    return Route(pipeline.id, TopicMode.SHARED if pipeline.shared else TopicMode.DEDICATED)


def delayed(task_id: str, *, due_at: float) -> OutgoingTask:
    raw = json.dumps({"id": task_id}).encode()
    return OutgoingTask(
        id=task_id,
        data=raw,
        data_sha256=hashlib.sha256(raw).digest(),
        due_at_ms=int(due_at * 1000),
    )


def wake_at(engine: sa.Engine, pipeline: ReadyPipeline) -> dt.datetime | None:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(grain_owners.c.wake_at).where(
                grain_owners.c.grain_id == str(GrainKey(pipeline_id=pipeline.id))
            )
        ).scalar()
    return from_db(value)


async def until_resting(host: SchedulerHost, engine: sa.Engine, pipeline: ReadyPipeline) -> None:
    async with asyncio.timeout(30):
        while host.grain_active(pipeline.id) or wake_at(engine, pipeline) is None:
            await asyncio.sleep(0.05)


async def poll_until(
    host: SchedulerHost, pipeline: ReadyPipeline, *, timeout_s: float
) -> tuple[list[str], float]:
    """Long-poll until tasks come; their ids and when they came."""
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline.token}"),)
    async with channel, asyncio.timeout(timeout_s):
        while True:
            reply = await worker.Poll(
                worker_pb2.PollRequest(
                    pipeline_id=pipeline.id, worker="w", max_tasks=10, wait_ms=2000
                ),
                metadata=auth,
            )
            if reply.tasks:
                return [t.task_id for t in reply.tasks], time.time()


@pytest.mark.parametrize("shared", [False, True], ids=["own-topic", "shared-topic"])
async def test_a_grain_holding_a_delayed_task_rests_and_hands_it_out_on_time(
    settings: Settings,
    engine: sa.Engine,
    kafka_bootstrap: str,
    producer: KafkaProducer,
    shared: bool,
) -> None:
    pipeline = await create_ready_pipeline(engine, kafka_bootstrap, shared=shared)
    async with SchedulerHost(settings=settings, rescan_s=1, timing=TIMING) as host:
        await wait_hosted(host, pipeline.id)
        due = time.time() + 15
        await producer.submit(route(pipeline), [delayed("later", due_at=due)])
        await until_resting(host, engine, pipeline)
        stored = wake_at(engine, pipeline)
        assert stored is not None
        # Woken the margin before its timer (the store keeps microseconds).
        expected = dt.datetime.fromtimestamp(due - 2.0, dt.UTC)
        assert abs((stored - expected).total_seconds()) < 0.01
        assert time.time() < due - 5, "rested too late to show anything"
        got, handed_out = await poll_until(host, pipeline, timeout_s=40)
        assert got == ["later"]
        assert due - 0.05 <= handed_out <= due + 1.0, f"{handed_out - due:+.3f} s from due"
        assert host.waking.woken >= 1
        assert wake_at(engine, pipeline) is None  # its activation's claim cleared it


async def test_a_new_owner_leaves_a_resting_grain_to_its_wake_up(
    settings: Settings,
    engine: sa.Engine,
    kafka_bootstrap: str,
    producer: KafkaProducer,
) -> None:
    pipeline = await create_ready_pipeline(engine, kafka_bootstrap, shared=True)
    due = time.time() + 20
    async with SchedulerHost(settings=settings, rescan_s=1, timing=TIMING) as first:
        await wait_hosted(first, pipeline.id)
        await producer.submit(route(pipeline), [delayed("later", due_at=due)])
        await until_resting(first, engine, pipeline)
    async with SchedulerHost(settings=settings, rescan_s=1, timing=TIMING) as second:
        await wait_hosted(second, pipeline.id)
        await asyncio.sleep(1.5)  # a reconcile and a wake-up scan
        assert not second.grain_active(pipeline.id), "a takeover activated a resting grain"
        assert wake_at(engine, pipeline) is not None
        got, handed_out = await poll_until(second, pipeline, timeout_s=40)
    assert got == ["later"]
    assert due - 0.05 <= handed_out <= due + 1.0, f"{handed_out - due:+.3f} s from due"


async def test_a_schedule_changed_without_its_record_wakes_a_resting_grain(
    settings: Settings, engine: sa.Engine, kafka_bootstrap: str
) -> None:
    """The API writes the change and makes the resting grain due; the record that would
    tell it is never sent here, as if the API died in between."""
    pipeline = await create_ready_pipeline(engine, kafka_bootstrap)
    control = ControlStore(engine=engine)
    hourly = {
        "every_s": 3600.0,
        "timezone": "UTC",
        "data_json": "{}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    control.create_schedule(pipeline_id=pipeline.id, name="hourly", spec=hourly, paused=False)
    async with SchedulerHost(settings=settings, rescan_s=1, timing=TIMING) as host:
        await wait_hosted(host, pipeline.id)
        await until_resting(host, engine, pipeline)  # its schedule fires in an hour
        every_3s = {**hourly, "every_s": 3.0}
        record = control.get_schedule(pipeline_id=pipeline.id, name="hourly")
        assert record is not None
        control.update_schedule(record, spec=every_3s)
        got, _ = await poll_until(host, pipeline, timeout_s=30)
    assert got and all(task_id.startswith(f"{record.id}@") for task_id in got)
