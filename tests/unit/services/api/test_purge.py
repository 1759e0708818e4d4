"""``POST .../tasks:purge``: the API picks dead tasks older than the cutoff and sends one
purge record each (the grain deletes them); bad inputs are 422s naming the field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from services.store.schema import tasks
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, insert_task

TASKS = "/api/applications/a/pipelines/p/tasks"


def died(database_url: str, task_id: str, *, days_ago: float) -> None:
    when = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days_ago)
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.update(tasks).where(tasks.c.id == task_id).values(finished_at=when))
    finally:
        engine.dispose()


async def seeded(api: Api) -> tuple[str, dict[str, Any]]:
    key, pipeline = await api.ready_pipeline()
    for task_id, status, age in (
        ("old1", "dead", 10),
        ("old2", "dead", 8),
        ("new", "dead", 1),
        ("done", "succeeded", 30),
    ):
        insert_task(
            api.database_url, pipeline_id=pipeline["id"], task_id=task_id, data=b"{}", status=status
        )
        died(api.database_url, task_id, days_ago=age)
    return key, pipeline


async def test_purge_by_age_sends_one_purge_per_old_dead_task(api: Api, fakes: Fakes) -> None:
    key, pipeline = await seeded(api)
    answer = await api.client.post(
        f"{TASKS}:purge", json={"status": "dead", "older_than": "7d"}, headers=bearer(key)
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert [(r["id"], r["result"]) for r in body["results"]] == [
        ("old1", "purging"),
        ("old2", "purging"),
    ]
    assert body["acted"] == 2
    cutoff = dt.datetime.fromisoformat(body["older_than"])
    events = fakes.producer.task_events(pipeline["id"])
    assert [(e.task_id, e.WhichOneof("kind")) for e in events] == [
        ("old1", "purge"),
        ("old2", "purge"),
    ]
    assert events[0].purge.finished_before_ms == int(cutoff.timestamp() * 1000)


async def test_purge_by_ids_says_what_became_of_each(api: Api, fakes: Fakes) -> None:
    key, pipeline = await seeded(api)
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=5)).isoformat()
    answer = await api.client.post(
        f"{TASKS}:purge",
        json={"status": "dead", "older_than": when, "ids": ["new", "old1", "done", "nope"]},
        headers=bearer(key),
    )
    assert answer.status_code == 202, answer.text
    assert [(r["id"], r["result"], r["status"]) for r in answer.json()["results"]] == [
        ("new", "skipped", "dead"),  # died after the cutoff
        ("old1", "purging", "dead"),
        ("done", "skipped", "succeeded"),
        ("nope", "not_found", None),
    ]
    assert [e.task_id for e in fakes.producer.task_events(pipeline["id"])] == ["old1"]


async def test_purge_limit_bounds_one_request(api: Api, fakes: Fakes) -> None:
    key, _pipeline = await seeded(api)
    answer = await api.client.post(
        f"{TASKS}:purge",
        json={"status": "dead", "older_than": "1h", "limit": 1},
        headers=bearer(key),
    )
    assert [r["id"] for r in answer.json()["results"]] == ["new"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"status": "dead", "older_than": "yesterday"}, "older_than: 'yesterday' is neither"),
        ({"status": "dead", "older_than": "-7d"}, "older_than:"),
        ({"status": "dead", "older_than": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"status": "dead", "older_than": "2026-13-45T00:00:00Z"}, "older_than:"),
        ({"status": "dead", "older_than": "2026-11-01T00:00:00"}, "older_than:"),  # no offset
        ({"status": "dead"}, "older_than"),
        ({"status": "queued", "older_than": "1d"}, "status"),
        ({"older_than": "1d"}, "status"),
        ({"status": "dead", "older_than": "1d", "limit": 0}, "limit"),
        ({"status": "dead", "older_than": "1d", "ids": []}, "ids"),
    ],
)
async def test_bad_purges_are_422_naming_the_field(
    api: Api, fakes: Fakes, body: dict[str, Any], needle: str
) -> None:
    key, pipeline = await seeded(api)
    answer = await api.client.post(f"{TASKS}:purge", json=body, headers=bearer(key))
    assert needle in assert_error(answer, 422, "invalid_request")
    assert fakes.producer.task_events(pipeline["id"]) == []
