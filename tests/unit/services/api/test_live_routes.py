"""``GET .../tasks/{id}?wait=`` and ``GET .../pipelines/{p}/events`` over the in-memory log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy as sa

from actors.pipeline.events import StatusChange
from services.api.ui.session import COOKIE
from services.live.source import MemoryEventLog
from services.live.wire import LiveEvent
from services.store.schema import tasks
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import (
    OPERATOR_KEY,
    Api,
    assert_error,
    bearer,
    insert_task,
    running_api,
    settings_for,
)
from tests.unit.services.api.ui.test_routes import sign_in, with_csrf
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


# -- the dashboard's stream: its session cookie, as an EventSource sends it ---------------


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_dashboards_session_cookie_opens_the_stream(live_api: Api) -> None:
    """A GET with the cookie alone (no header, no CSRF token: EventSource sends neither)
    gets the counts, then the live changes; the stream is closed when it ends."""
    key, pipeline = await live_api.ready_pipeline()
    cookie, _ = await sign_in(live_api, key)
    await asyncio.wait_for(log_of(live_api).following.wait(), 5)
    streaming = asyncio.create_task(
        live_api.client.get(EVENTS, params={"duration": "1s"}, headers=cookie)
    )
    await until(lambda: live_api.ctx.live.streams == 1)
    change = StatusChange(task_id="t1", status="queued", attempt=0)
    log_of(live_api).append(
        LiveEvent(pipeline_id=pipeline["id"], changes=(change,), counts={"queued": 1})
    )
    answer = await asyncio.wait_for(streaming, 10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    counts, tasks_event = parse(answer.text)
    assert counts["event"] == "counts"
    assert tasks_event["event"] == "tasks"
    assert json.loads(tasks_event["data"]) == {
        "changes": [{"id": "t1", "status": "queued", "attempt": 0}],
        "counts": {"queued": 1},
    }
    assert live_api.ctx.live.streams == 0


async def test_the_stream_without_a_valid_session_is_401(live_api: Api) -> None:
    key, _ = await live_api.ready_pipeline()
    assert_error(await live_api.client.get(EVENTS), 401, "unauthorized")
    forged = {"Cookie": f"{COOKIE}=gAAAAABnot-a-session"}
    assert_error(await live_api.client.get(EVENTS, headers=forged), 401, "session_expired")
    # A header is judged alone: a wrong key beside a valid cookie is a 401 too.
    cookie, _ = await sign_in(live_api, key)
    wrong = {**cookie, "Authorization": "Bearer wsk_wrong"}
    assert_error(await live_api.client.get(EVENTS, headers=wrong), 401, "unauthorized")
    assert live_api.ctx.live.streams == 0


async def test_another_tenants_session_cannot_follow_a_pipeline(live_api: Api) -> None:
    """The other tenant has an application of the same name: its session still finds no
    pipeline ``p`` (a 404, as every route answers for another tenant's object)."""
    await live_api.ready_pipeline("p")
    other, _ = await live_api.ready_pipeline("q")
    cookie, _ = await sign_in(live_api, other)
    assert_error(await live_api.client.get(EVENTS, headers=cookie), 404, "not_found")
    own = await live_api.client.get(
        "/api/applications/a/pipelines/q/events", params={"duration": "0s"}, headers=cookie
    )
    assert own.status_code == 200, own.text


async def test_the_operator_follows_a_picked_tenants_pipeline_only(live_api: Api) -> None:
    key, _ = await live_api.ready_pipeline("p")
    cookie, csrf = await sign_in(live_api, OPERATOR_KEY)
    unpicked = await live_api.client.get(EVENTS, headers=cookie)
    assert_error(unpicked, 409, "no_tenant_picked")
    tenant = await live_api.ctx.db(live_api.store.tenant_by_key, key)
    assert tenant is not None
    picked = await live_api.client.put(
        "/ui/session/tenant", json={"tenant_id": tenant.id}, headers=with_csrf(cookie, csrf)
    )
    assert picked.status_code == 200, picked.text
    viewing = {"Cookie": f"{COOKIE}={picked.cookies[COOKIE]}"}
    answer = await live_api.client.get(EVENTS, params={"duration": "0s"}, headers=viewing)
    assert answer.status_code == 200, answer.text
