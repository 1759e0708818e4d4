"""The submits' own routes: which requests they take, that they answer as the declared
routes do, that concurrent single submits share their idempotency reads, and that a
batch's items are carried as sent whichever route reads them."""

from __future__ import annotations

import asyncio

import pytest
from starlette.routing import Match

from services.api.routes.fast_submit import BatchSubmitRoute, SingleSubmitRoute
from services.api.submit import plain_batch
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, insert_task

SUBMIT = "/api/applications/a/pipelines/p"
TASKS = f"{SUBMIT}/tasks"
TEMPLATE = "/api/applications/{app}/pipelines/{pipeline}"


def _scope(method: str, path: str, query: bytes = b"") -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [],
    }


@pytest.mark.parametrize(
    ("method", "path", "query", "taken"),
    [
        ("POST", SUBMIT, b"", True),
        ("POST", SUBMIT, b"id=order-1", True),
        ("POST", SUBMIT, b"id=", True),
        ("POST", SUBMIT, b"delay=1m", False),
        ("POST", SUBMIT, b"id=order-1&max_attempts=3", False),
        ("POST", SUBMIT, b"ID=order-1", False),
        ("GET", SUBMIT, b"", False),
        ("PATCH", SUBMIT, b"", False),
        ("POST", f"{SUBMIT}/tasks", b"", False),
        ("POST", "/api/applications/a/pipelines", b"", False),
    ],
)
async def test_the_route_stands_first_and_takes_only_plain_and_id_only_submits(
    api: Api, method: str, path: str, query: bytes, taken: bool
) -> None:
    route = api.app.router.routes[0]
    assert isinstance(route, SingleSubmitRoute)
    match, child = route.matches(_scope(method, path, query))
    assert (match is Match.FULL) is taken
    if taken:
        assert child["path_params"] == {"app": "a", "pipeline": "p"}
        # The declared route, for the request metrics' label and the traces' name.
        assert child["route"] is route.declared
        assert route.declared.path == TEMPLATE


async def test_it_answers_as_the_declared_route_does(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    fast = await api.client.post(f"{SUBMIT}?id=t1", json={"n": 1}, headers=bearer(key))
    declared = await api.client.post(
        f"{SUBMIT}?id=t2&max_attempts=3", json={"n": 1}, headers=bearer(key)
    )
    assert (fast.status_code, fast.json()) == (202, {"id": "t1", "status": "queued"})
    assert (declared.status_code, declared.json()) == (202, {"id": "t2", "status": "queued"})
    # Errors take the app's handlers: the same JSON shape, a challenge on 401.
    bad_id = await api.client.post(f"{SUBMIT}?id=a/b", json={}, headers=bearer(key))
    assert "task id" in assert_error(bad_id, 422, "invalid_request")
    no_key = await api.client.post(SUBMIT, json={})
    assert_error(no_key, 401, "unauthorized")
    assert "www-authenticate" in no_key.headers
    unknown = await api.client.post(
        "/api/applications/a/pipelines/nope", json={}, headers=bearer(key)
    )
    assert "no pipeline named 'nope'" in assert_error(unknown, 404, "not_found")
    not_object = await api.client.post(SUBMIT, content=b"[1]", headers=bearer(key))
    assert not_object.status_code == 422, not_object.text
    assert [e.task_id for e in fakes.producer.task_events(pipeline["id"])] == ["t1", "t2"]


async def test_requests_are_counted_under_the_routes_template(api: Api) -> None:
    key, _ = await api.ready_pipeline()

    async def counted() -> float:
        text = (await api.client.get("/metrics")).text
        line = f'wsched_api_requests_total{{method="POST",route="{TEMPLATE}",status="202"}} '
        return sum(
            float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)
        )

    before = await counted()
    answer = await api.client.post(SUBMIT, json={}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert await counted() == before + 1


async def test_concurrent_single_submits_share_their_idempotency_reads(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="stored", data=b"{}")
    reads = api.ctx.existing_reads
    before = reads.statements
    ids = [f"c{n}" for n in range(40)] + ["stored"]
    answers = await asyncio.gather(
        *(api.client.post(f"{SUBMIT}?id={i}", content=b"{}", headers=bearer(key)) for i in ids)
    )
    assert [a.status_code for a in answers] == [202] * 40 + [200]
    assert answers[-1].json()["id"] == "stored"
    assert 0 < reads.statements - before < len(ids) // 2
    produced = sorted(e.task_id for e in fakes.producer.task_events(pipeline["id"]))
    assert produced == sorted(ids[:-1])


@pytest.mark.parametrize(
    ("method", "path", "taken"),
    [
        ("POST", TASKS, True),
        ("GET", TASKS, False),
        ("POST", SUBMIT, False),
        ("POST", f"{TASKS}/t1", False),
    ],
)
async def test_the_batch_route_stands_second_and_takes_batch_posts(
    api: Api, method: str, path: str, taken: bool
) -> None:
    route = api.app.router.routes[1]
    assert isinstance(route, BatchSubmitRoute)
    match, child = route.matches(_scope(method, path))
    assert (match is Match.FULL) is taken
    if taken:
        assert child["route"] is route.declared
        assert route.declared.path == f"{TEMPLATE}/tasks"


@pytest.mark.parametrize(
    ("body", "plain"),
    [
        (b'{"tasks":[{"data":{"n":1}},{"data":{},"id":"a-1"}]}', True),
        (b'{"tasks":[{"data":{"n":1},"delay":"1m"}]}', False),  # a field beyond the two
        (b'{"tasks":[]}', False),
        (b'{"tasks":[{"data":[1]}]}', False),  # data not an object
        (b'{"tasks":[{"data":{},"id":"a/b"}]}', False),  # not a task id
        (b'{"tasks":[{"data":{},"id":7}]}', False),
        (b'{"tasks":[{"data":{"s":"\xff"}}]}', False),  # not UTF-8
        (b'{"tasks":[{"data":{"n":1}}]', False),  # not JSON
        (b'{"tasks":[{"data":{}}],"more":1}', False),
    ],
)
def test_only_the_plain_form_is_read_without_the_model(body: bytes, plain: bool) -> None:
    assert (plain_batch(body) is not None) is plain


async def test_a_batchs_items_are_carried_as_sent_by_either_route(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    plain = b'{"tasks": [ {"data": { "n" : 1,  "s": "\\u00e9" }, "id": "p1"} ]}'
    declared = b'{"tasks": [ {"data": { "n" : 2 }, "id": "d1", "max_attempts": 2} ]}'
    modelled = b'{"tasks": [ {"data": { "n" : 2 }, "id": "d1", "retry": {"max_attempts": 2}} ]}'
    headers = {**bearer(key), "content-type": "application/json"}
    for body in (plain, modelled):
        answer = await api.client.post(TASKS, content=body, headers=headers)
        assert answer.status_code == 202, answer.text
    refused = await api.client.post(TASKS, content=declared, headers=headers)
    assert "max_attempts" in assert_error(refused, 422, "invalid_request")
    events = {e.task_id: e for e in fakes.producer.task_events(pipeline["id"])}
    assert events["p1"].submit.data == b'{ "n" : 1,  "s": "\\u00e9" }'
    assert events["d1"].submit.data == b'{ "n" : 2 }'
    assert events["d1"].submit.retry.max_attempts == 2
    # As sent is what the idempotency check compares: other spacing is other data.
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="s1", data=b'{ "n" : 1 }')
    for body, result in (
        (b'{"tasks":[{"data":{"n":1},"id":"s1"}]}', "conflict"),
        (b'{"tasks":[{"data":{ "n" : 1 },"id":"s1"}]}', "existing"),
        (b'{"tasks":[{"data":{ "n" : 1 },"id":"s1","delay":"0s"}]}', "existing"),
    ):
        answer = await api.client.post(TASKS, content=body, headers=headers)
        assert answer.json()["results"][0]["result"] == result, body


async def test_both_batch_routes_answer_alike(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    plain = await api.client.post(
        TASKS,
        json={"tasks": [{"data": {"n": 1}, "id": "x"}, {"data": {"n": 2}, "id": "x"}]},
        headers=bearer(key),
    )
    declared = await api.client.post(
        TASKS,
        json={
            "tasks": [{"data": {"n": 1}, "id": "y", "delay": "0s"}, {"data": {"n": 2}, "id": "y"}]
        },
        headers=bearer(key),
    )
    for answer, task_id in ((plain, "x"), (declared, "y")):
        assert answer.status_code == 202, answer.text
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body == {
            "results": [
                {"id": task_id, "result": "queued", "status": "queued", "detail": None},
                {
                    "id": task_id,
                    "result": "conflict",
                    "status": None,
                    "detail": f"tasks[0] of this batch has id {task_id!r} with different data; "
                    "use another id",
                },
            ],
            "queued": 1,
            "existing": 0,
            "conflicts": 1,
        }
    # The errors of a body that is not the plain form are the model's; so is a body not
    # sent as JSON, plain or not.
    headers = {**bearer(key), "content-type": "application/json"}
    for body, status, code, words in (
        (b'{"tasks":[{"data":{},"id":"a/b"}]}', 422, "invalid_request", "tasks.0.id"),
        (b'{"tasks":[]}', 422, "invalid_request", "tasks"),
        (b'{"tasks":[{"data":[1]}]}', 422, "invalid_request", "tasks.0.data"),
        (b'{"tasks":[{"data":{}}]', 400, "malformed_json", "not valid JSON"),
    ):
        answer = await api.client.post(TASKS, content=body, headers=headers)
        assert words in assert_error(answer, status, code)
    for content_type in ({}, {"content-type": "text/plain"}):
        answer = await api.client.post(
            TASKS, content=b'{"tasks":[{"data":{}}]}', headers={**bearer(key), **content_type}
        )
        assert "Content-Type: application/json" in assert_error(answer, 422, "invalid_request")
    # Unauthenticated, the plain form is refused before anything is read from it.
    no_key = await api.client.post(TASKS, json={"tasks": [{"data": {}}]})
    assert_error(no_key, 401, "unauthorized")
    assert sorted(e.task_id for e in fakes.producer.task_events(pipeline["id"])) == ["x", "y"]


async def test_an_unpaired_surrogate_in_a_batch_is_a_400_not_a_500(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    body = b'{"tasks":[{"data":{"s":"\\ud800"}}]}'
    headers = {**bearer(key), "content-type": "application/json"}
    answer = await api.client.post(TASKS, content=body, headers=headers)
    assert "surrogate" in assert_error(answer, 400, "malformed_json")
    assert fakes.producer.task_events(pipeline["id"]) == []
