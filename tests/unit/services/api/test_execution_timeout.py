"""Execution timeouts over the API: a pipeline's (create, PATCH, clear) and a task's own
(single and batch submit), carried in the envelope; bad values are 422s naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from services.store.schema import tasks
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, insert_task

PIPELINES = "/api/applications/a/pipelines"
SUBMIT = f"{PIPELINES}/p"
TASKS = f"{SUBMIT}/tasks"


async def test_a_pipelines_timeout_is_set_shown_changed_and_cleared(api: Api) -> None:
    key, before = await api.ready_pipeline()
    assert before["execution_timeout_s"] is None
    created = await api.client.post(
        PIPELINES,
        json={"name": "q", "chart": "./c", "execution_timeout": "15m"},
        headers=bearer(key),
    )
    assert created.status_code == 201, created.text
    assert created.json()["execution_timeout_s"] == 900.0
    patched = await api.client.patch(
        f"{PIPELINES}/q", json={"execution_timeout": 2.5}, headers=bearer(key)
    )
    assert patched.json()["execution_timeout_s"] == 2.5
    untouched = await api.client.patch(f"{PIPELINES}/q", json={"values": {}}, headers=bearer(key))
    assert untouched.json()["execution_timeout_s"] == 2.5
    cleared = await api.client.patch(
        f"{PIPELINES}/q", json={"execution_timeout": 0}, headers=bearer(key)
    )
    assert cleared.json()["execution_timeout_s"] is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (-1, "more than 0 s and at most 7 days"),
        ("8d", "more than 0 s and at most 7 days"),
        (1e12, "more than 0 s and at most 7 days"),
        ("soon", "is not a duration"),
        (True, "give seconds or a duration"),
        ([1], "give seconds or a duration"),
    ],
)
async def test_a_bad_pipeline_timeout_is_a_422_naming_it(api: Api, value: Any, needle: str) -> None:
    key, _ = await api.ready_pipeline()
    for answer in (
        await api.client.post(
            PIPELINES,
            json={"name": "q", "chart": "./c", "execution_timeout": value},
            headers=bearer(key),
        ),
        await api.client.patch(f"{SUBMIT}", json={"execution_timeout": value}, headers=bearer(key)),
    ):
        detail = assert_error(answer, 422, "invalid_request")
        assert "execution_timeout" in detail and needle in detail, detail


async def test_a_tasks_own_timeout_travels_in_its_envelope(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    single = await api.client.post(
        f"{SUBMIT}?execution_timeout=90s", json={"a": 1}, headers=bearer(key)
    )
    assert single.status_code == 202, single.text
    batch = await api.client.post(
        TASKS,
        json={
            "tasks": [
                {"data": {"a": 2}, "execution_timeout": 1.5},
                {"data": {"a": 3}, "execution_timeout": "PT2M"},
                {"data": {"a": 4}},
            ]
        },
        headers=bearer(key),
    )
    assert batch.status_code == 202, batch.text
    events = fakes.producer.task_events(pipeline["id"])
    assert [e.submit.execution_timeout_s for e in events] == [90.0, 1.5, 120.0, 0.0]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("execution_timeout=0", "more than 0 s"),
        ("execution_timeout=-5", "more than 0 s"),
        ("execution_timeout=30d", "at most 7 days"),
        ("execution_timeout=nan", "more than 0 s"),
        ("execution_timeout=later", "is not a duration"),
    ],
)
async def test_a_bad_single_submit_timeout_is_a_422_naming_it(
    api: Api, fakes: Fakes, query: str, needle: str
) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(f"{SUBMIT}?{query}", json={"a": 1}, headers=bearer(key))
    detail = assert_error(answer, 422, "invalid_request")
    assert detail.startswith("execution_timeout:") and needle in detail, detail
    assert fakes.producer.task_events(pipeline["id"]) == []


@pytest.mark.parametrize("value", [0, -1, "0s", "8d", "x", None])
async def test_a_bad_batch_item_timeout_is_a_422_naming_the_item(
    api: Api, fakes: Fakes, value: Any
) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(
        TASKS,
        json={"tasks": [{"data": {}}, {"data": {}, "execution_timeout": value}]},
        headers=bearer(key),
    )
    if value is None:  # null is "not given"
        assert answer.status_code == 202, answer.text
        return
    detail = assert_error(answer, 422, "invalid_request")
    assert "tasks.1.execution_timeout" in detail, detail
    assert fakes.producer.task_events(pipeline["id"]) == []


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"pipeline": [{"executor": "py", "handler": "no-colon"}]}, "values.pipeline.0.handler"),
        ({"pipeline": [{"executor": "py"}]}, "commands or a handler"),
        ({"pipeline": [{"executor": "sh", "commands": ['echo "{{x}}"']}]}, "double quotes"),
        ({"timeout_s": -5}, "values.timeout_s"),
        ({"timeout_s": "soon"}, "values.timeout_s"),
    ],
)
async def test_a_bad_definition_in_the_values_is_a_422_naming_it(
    api: Api, values: dict[str, Any], needle: str
) -> None:
    key, _ = await api.ready_pipeline()
    created = await api.client.post(
        PIPELINES, json={"name": "q", "chart": "./c", "values": values}, headers=bearer(key)
    )
    patched = await api.client.patch(SUBMIT, json={"values": values}, headers=bearer(key))
    for answer in (created, patched):
        detail = assert_error(answer, 422, "invalid_request")
        assert detail.startswith("values:") and needle in detail, detail


async def test_a_handler_step_and_a_definition_timeout_in_the_values_are_accepted(
    api: Api,
) -> None:
    key, _ = await api.ready_pipeline()
    values = {
        "pipeline": [{"executor": "py", "handler": "mypkg.tasks:resize", "pool": "thread"}],
        "timeout_s": 300,
        "executors": {"py": {}},
    }
    created = await api.client.post(
        PIPELINES, json={"name": "q", "chart": "./c", "values": values}, headers=bearer(key)
    )
    assert created.status_code == 201, created.text
    assert created.json()["values"] == values


async def test_a_task_shows_its_own_timeout(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    for task_id in ("own", "plain"):
        insert_task(api.database_url, pipeline_id=pipeline["id"], task_id=task_id, data=b"{}")
    engine = sa.create_engine(api.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == "own")
                .values(policy_json='{"execution_timeout_s":90.0,"max_attempts":2}')
            )
    finally:
        engine.dispose()
    own = await api.client.get(f"{TASKS}/own", headers=bearer(key))
    plain = await api.client.get(f"{TASKS}/plain", headers=bearer(key))
    assert own.json()["execution_timeout_s"] == 90.0
    assert plain.json()["execution_timeout_s"] is None
    listed = await api.client.get(TASKS, headers=bearer(key))
    assert {t["id"]: t["execution_timeout_s"] for t in listed.json()["tasks"]} == {
        "own": 90.0,
        "plain": None,
    }
