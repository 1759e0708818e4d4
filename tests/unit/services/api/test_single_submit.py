"""The single-task submit's own route: which requests it takes, that it answers as the
declared route does, and that concurrent submits share their idempotency reads."""

from __future__ import annotations

import asyncio

import pytest
from starlette.routing import Match

from services.api.routes.single_submit import SingleSubmitRoute
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, insert_task

SUBMIT = "/api/applications/a/pipelines/p"
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
