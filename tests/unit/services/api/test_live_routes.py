"""``GET .../tasks/{id}?wait=`` and ``GET .../pipelines/{p}/events`` over the in-memory log."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from actors.pipeline.events import StatusChange
from services.live.source import MemoryEventLog
from services.live.wire import LiveEvent
from services.store.schema import tasks
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import (
    Api,
    assert_error,
    bearer,
    insert_task,
    running_api,
    settings_for,
)
from tests.unit.services.live.test_sse import parse

TASK = "/api/applications/a/pipelines/p/tasks/t1"
EVENTS = "/api/applications/a/pipelines/p/events"


@pytest.fixture
async def live_api(migrated_sqlite: str, fakes: Fakes) -> AsyncIterator[Api]:
    limits = dataclasses.replace(LIMITS, max_wait_s=60, default_stream_s=0.3, max_stream_s=5)
    async with running_api(
        settings_for(migrated_sqlite),
        limits=limits,
        producer=fakes.producer,
        admin=fakes.admin,
        deployer=fakes.deployer,
    ) as running:
        yield running


def log_of(api: Api) -> MemoryEventLog:
    assert isinstance(api.ctx.events, MemoryEventLog)
    return api.ctx.events


def finish(api: Api, pipeline_id: str, status: str) -> LiveEvent:
    """What a grain does: write the end, then publish it."""
    engine = sa.create_engine(api.database_url)
    with engine.begin() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.id == "t1").values(status=status))
    engine.dispose()
    change = StatusChange(task_id="t1", status=status, attempt=1)
    return LiveEvent(pipeline_id=pipeline_id, changes=(change,), counts={status: 1})


async def test_a_waiter_is_answered_when_its_task_ends(live_api: Api) -> None:
    key, pipeline = await live_api.ready_pipeline()
    insert_task(live_api.database_url, pipeline_id=pipeline["id"], task_id="t1", data=b"{}")
    await asyncio.wait_for(log_of(live_api).following.wait(), 5)
    started = asyncio.get_running_loop().time()
    waiting = asyncio.create_task(
        live_api.client.get(TASK, params={"wait": "30s"}, headers=bearer(key))
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert live_api.ctx.live.waiting == 1
    log_of(live_api).append(finish(live_api, pipeline["id"], "succeeded"))
    answer = await asyncio.wait_for(waiting, 5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert asyncio.get_running_loop().time() - started < 5
    assert live_api.ctx.live.waiting == 0


async def test_a_wait_ends_at_its_timeout_with_the_current_state(live_api: Api) -> None:
    key, pipeline = await live_api.ready_pipeline()
    insert_task(live_api.database_url, pipeline_id=pipeline["id"], task_id="t1", data=b"{}")
    answer = await live_api.client.get(TASK, params={"wait": "0.2"}, headers=bearer(key))
    assert answer.status_code == 200
    assert answer.json()["status"] == "queued"


@pytest.mark.parametrize("wait", ["61s", "2m", "-1", "soon", "nan"])
async def test_a_wait_beyond_the_bound_is_refused(live_api: Api, wait: str) -> None:
    key, _ = await live_api.ready_pipeline()
    answer = await live_api.client.get(TASK, params={"wait": wait}, headers=bearer(key))
    assert_error(answer, 422, "invalid_request")


async def test_the_stream_resumes_after_its_last_event_id(live_api: Api) -> None:
    key, pipeline = await live_api.ready_pipeline()
    insert_task(live_api.database_url, pipeline_id=pipeline["id"], task_id="t1", data=b"{}")
    log = log_of(live_api)
    first = log.append(finish(live_api, pipeline["id"], "queued"))
    log.append(finish(live_api, pipeline["id"], "succeeded"))
    answer = await live_api.client.get(EVENTS, headers={**bearer(key), "Last-Event-ID": str(first)})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    [event] = parse(answer.text)
    assert event["event"] == "tasks"
    assert event["id"] == f"{first.partition}:{first.offset + 1}"


async def test_a_malformed_last_event_id_is_a_400(live_api: Api) -> None:
    key, _ = await live_api.ready_pipeline()
    answer = await live_api.client.get(EVENTS, headers={**bearer(key), "Last-Event-ID": "x"})
    assert_error(answer, 400, "invalid_last_event_id")
