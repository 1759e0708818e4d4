"""Schedule routes over SQLite and an in-memory producer: definitions, change records,
next fire times, trigger, backfill, runs, and a 422 naming the field for each bad input."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import pytest
import sqlalchemy as sa

from actors.pipeline.schedules import ScheduleState, run_id
from services.store.schema import schedule_state, tasks
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, insert_task

SCHEDULES = "/api/applications/a/pipelines/p/schedules"


async def create(api: Api, key: str, **body: Any) -> dict[str, Any]:
    answer = await api.client.post(SCHEDULES, json={"name": "s", **body}, headers=bearer(key))
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def changes(fakes: Fakes, pipeline_id: str) -> list[tuple[str, int]]:
    return [
        (e.task_id, e.schedule_changed.version)
        for e in fakes.producer.task_events(pipeline_id)
        if e.WhichOneof("kind") == "schedule_changed"
    ]


async def test_create_stores_the_definition_and_tells_the_grain(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    created = await create(
        api, key, cron="0 9 * * *", timezone="Europe/Paris", data={"report": "daily"}
    )
    assert created["cron"] == "0 9 * * *"
    assert created["timezone"] == "Europe/Paris"
    assert created["data"] == {"report": "daily"}
    assert created["overlap"] == "allow"
    assert created["catchup"] == {"window_s": 3600.0, "policy": "latest", "after_pause": False}
    assert len(created["next_fire_times"]) == 5
    first = dt.datetime.fromisoformat(created["next_fire_times"][0])
    assert first.astimezone(dt.UTC).hour in (7, 8)  # 09:00 in Paris, summer or winter
    assert changes(fakes, pipeline["id"]) == [(created["id"], 1)]


async def test_every_and_at_every_are_intervals(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    every = await create(api, key, every="10s")
    times = [dt.datetime.fromisoformat(t) for t in every["next_fire_times"]]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [10] * 4
    answer = await api.client.post(
        SCHEDULES, json={"name": "s2", "cron": "@every 1m"}, headers=bearer(key)
    )
    assert answer.status_code == 201, answer.text
    times = [dt.datetime.fromisoformat(t) for t in answer.json()["next_fire_times"]]
    assert (times[1] - times[0]).total_seconds() == 60


async def test_pause_resume_patch_and_delete_each_bump_the_version(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    created = await create(api, key, every="1h")
    paused = await api.client.post(f"{SCHEDULES}/s:pause", headers=bearer(key))
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert paused.json()["next_fire_times"] == []
    resumed = await api.client.post(f"{SCHEDULES}/s:resume", headers=bearer(key))
    assert resumed.json()["paused"] is False
    patched = await api.client.patch(
        f"{SCHEDULES}/s", json={"cron": "*/5 * * * *"}, headers=bearer(key)
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["cron"], patched.json()["every"]) == ("*/5 * * * *", None)
    assert patched.json()["version"] == 4
    gone = await api.client.delete(f"{SCHEDULES}/s", headers=bearer(key))
    assert gone.status_code == 204
    assert (await api.client.get(f"{SCHEDULES}/s", headers=bearer(key))).status_code == 404
    sid = created["id"]
    assert changes(fakes, pipeline["id"]) == [(sid, 1), (sid, 2), (sid, 3), (sid, 4), (sid, 4)]
    again = await create(api, key, every="1h")
    assert again["id"] != sid  # a re-created schedule's runs never collide with the old


async def test_trigger_submits_a_run_named_by_the_schedule(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    created = await create(api, key, every="1h", data={"x": 1})
    answer = await api.client.post(f"{SCHEDULES}/s:trigger", headers=bearer(key))
    assert answer.status_code == 202, answer.text
    [event] = [
        e for e in fakes.producer.task_events(pipeline["id"]) if e.WhichOneof("kind") == "submit"
    ]
    assert event.task_id == answer.json()["id"]
    assert event.task_id.startswith(created["id"] + "@")
    assert event.submit.schedule_id == created["id"]
    assert event.submit.fire_at_ms > 0
    assert json.loads(event.submit.data) == {"x": 1}


async def test_backfill_submits_each_fire_time_once_by_its_run_id(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    created = await create(api, key, cron="0 * * * *")
    answer = await api.client.post(
        f"{SCHEDULES}/s:backfill",
        json={"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T03:00:00Z"},
        headers=bearer(key),
    )
    assert answer.status_code == 202, answer.text
    hours = [dt.datetime(2026, 11, 1, h, tzinfo=dt.UTC) for h in range(4)]
    assert answer.json()["task_ids"] == [run_id(created["id"], h) for h in hours]
    too_many = await api.client.post(
        f"{SCHEDULES}/s:backfill",
        json={"from": "2026-01-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        headers=bearer(key),
    )
    assert "shorter range" in assert_error(too_many, 422, "invalid_request")
    submitted = [e for e in fakes.producer.task_events(pipeline["id"]) if e.HasField("submit")]
    assert len(submitted) == 4


async def test_get_shows_counts_and_last_runs_and_runs_at_finds_one(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    created = await create(api, key, every="1m")
    fire = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
    task_id = run_id(created["id"], fire)
    insert_task(
        api.database_url,
        pipeline_id=pipeline["id"],
        task_id=task_id,
        data=b"{}",
        status="succeeded",
    )
    engine = sa.create_engine(api.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.id == task_id)
            .values(schedule_id=created["id"], fire_at=fire.replace(tzinfo=None))
        )
        state = ScheduleState(
            schedule_id=created["id"], version=1, next_fire_at=None, fired=7, skipped=2, missed=1
        )
        conn.execute(
            sa.insert(schedule_state).values(
                schedule_id=created["id"],
                pipeline_id=pipeline["id"],
                state_json=json.dumps(state.to_doc()),
                updated_at=fire.replace(tzinfo=None),
            )
        )
    engine.dispose()
    got = (await api.client.get(f"{SCHEDULES}/s", headers=bearer(key))).json()
    assert got["counts"] == {"fired": 7, "skipped": 2, "missed": 1}
    assert got["last_runs"] == [
        {"fire_at": "2026-11-26T12:00:00Z", "task_id": task_id, "status": "succeeded"}
    ]
    assert got["next_fire_times"] == []  # the grain says it has ended
    runs = await api.client.get(
        f"{SCHEDULES}/s/runs", params={"at": "2026-11-26T13:00:00+01:00"}, headers=bearer(key)
    )
    assert runs.json()["runs"][0]["task_id"] == task_id
    listed = (await api.client.get(SCHEDULES, headers=bearer(key))).json()
    assert [s["name"] for s in listed["schedules"]] == ["s"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "@every"}, "cron"),
        ({"cron": "@every 0s"}, "cron"),
        ({"every": "0s"}, "every"),
        ({"every": "-5s"}, "every"),
        ({"every": "soon"}, "every"),
        ({"cron": "* * * * *", "every": "1m"}, "cron"),
        ({}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "../../etc"}, "timezone"),
        (
            {
                "cron": "* * * * *",
                "start_at": "2027-01-02T00:00:00Z",
                "end_at": "2027-01-01T00:00:00Z",
            },
            "end_at",
        ),
        ({"every": "1m", "end_at": "2020-01-01T00:00:00Z"}, "end_at"),
        ({"every": "1m", "start_at": "2099-01-01T00:00:00Z"}, "start_at"),
        ({"every": "1m", "start_at": "yesterday"}, "start_at"),
        ({"every": "1m", "jitter": "-1s"}, "jitter"),
        ({"every": "1m", "catchup": {"window": "30d"}}, "catchup.window"),
    ],
)
async def test_bad_definitions_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.post(SCHEDULES, json={"name": "s", **body}, headers=bearer(key))
    detail = assert_error(answer, 422, "invalid_request")
    assert detail.startswith(f"{field}:"), detail


@pytest.mark.parametrize(
    "body",
    [
        {"name": "s", "every": "1m", "overlap": "sometimes"},
        {"name": "s", "every": "1m", "catchup": {"policy": "most"}},
        {"name": "s", "every": "1m", "max_runs": 0},
        {"name": "s", "every": "1m", "colour": "blue"},
        {"name": "Bad Name", "every": "1m"},
    ],
)
async def test_bad_shapes_are_422(api: Api, body: dict[str, Any]) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.post(SCHEDULES, json=body, headers=bearer(key))
    assert_error(answer, 422, "invalid_request")


async def test_a_name_in_use_is_409_and_an_unknown_one_404(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    await create(api, key, every="1m")
    again = await api.client.post(SCHEDULES, json={"name": "s", "every": "1m"}, headers=bearer(key))
    assert_error(again, 409, "name_taken")
    for call in (
        api.client.get(f"{SCHEDULES}/nope", headers=bearer(key)),
        api.client.post(f"{SCHEDULES}/nope:pause", headers=bearer(key)),
        api.client.delete(f"{SCHEDULES}/nope", headers=bearer(key)),
    ):
        assert_error(await call, 404, "not_found")


async def test_another_tenant_sees_no_schedule(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    await create(api, key, every="1m")
    other, _ = await api.ready_pipeline("q")
    answer = await api.client.get(f"{SCHEDULES}/s", headers=bearer(other))
    assert_error(answer, 404, "not_found")
