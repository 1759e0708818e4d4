"""Bearer keys: operator versus tenant, missing and wrong keys, tenant isolation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from services.store.schema import tenants
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import OPERATOR, Api, assert_error, bearer


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "Authorization: Bearer"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer <key>"),
        ({"Authorization": "Bearer "}, "Bearer <key>"),
        ({"Authorization": "Bearer wsk_not-a-key"}, "not valid"),
    ],
)
async def test_missing_malformed_or_unknown_keys_are_401_with_a_challenge(
    api: Api, headers: dict[str, str], needle: str
) -> None:
    for path in ("/api/tenants", "/api/applications"):
        answer = await api.client.get(path, headers=headers)
        assert needle in assert_error(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"] == "Bearer"


async def test_a_tenant_key_cannot_manage_tenants(api: Api) -> None:
    key = await api.tenant("acme")
    assert key.startswith("wsk_")
    answer = await api.client.post("/api/tenants", json={"name": "evil"}, headers=bearer(key))
    assert "operator key" in assert_error(answer, 403, "forbidden")
    listed = await api.client.get("/api/tenants", headers=OPERATOR)
    assert [t["name"] for t in listed.json()["tenants"]] == ["acme"]


async def test_the_operator_key_is_not_a_tenant(api: Api) -> None:
    answer = await api.client.get("/api/applications", headers=OPERATOR)
    assert "tenant" in assert_error(answer, 403, "forbidden")


async def test_the_api_key_is_stored_only_as_a_digest(api: Api) -> None:
    key = await api.tenant("acme")
    engine = sa.create_engine(api.database_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(tenants.c.api_key_hash)).scalar_one()
    engine.dispose()
    assert key not in stored
    assert len(stored) == 64
    found = await api.ctx.db(api.store.tenant_by_key, key)
    assert found is not None
    assert found.name == "acme"


async def test_another_tenants_resources_answer_404(api: Api, fakes: Fakes) -> None:
    owner, pipeline = await api.ready_pipeline("p")
    other = await api.tenant("other")
    await api.application(other, "mine")
    requests: list[tuple[str, str, dict[str, object] | None]] = [
        ("GET", "/api/applications/a", None),
        ("DELETE", "/api/applications/a", None),
        ("GET", "/api/applications/a/pipelines", None),
        ("GET", "/api/applications/a/pipelines/p", None),
        ("PATCH", "/api/applications/a/pipelines/p", {"max_attempts": 5}),
        ("DELETE", "/api/applications/a/pipelines/p", None),
        ("POST", "/api/applications/a/pipelines/p", {"x": 1}),
        ("POST", "/api/applications/a/pipelines/p/tasks", {"tasks": [{"data": {}}]}),
        ("GET", "/api/applications/a/pipelines/p/tasks", None),
        ("GET", "/api/applications/a/pipelines/p/stats", None),
        ("GET", "/api/applications/a/pipelines/p/tasks/t1", None),
        ("DELETE", "/api/applications/a/pipelines/p/tasks/t1", None),
        ("POST", "/api/applications/a/pipelines/p/tasks/t1/requeue", None),
    ]
    for method, path, body in requests:
        answer = await api.client.request(method, path, json=body, headers=bearer(other))
        assert_error(answer, 404, "not_found")
    # The owner still has everything as it was, and nothing reached the pipeline's topic.
    mine = await api.client.get("/api/applications/a/pipelines/p", headers=bearer(owner))
    assert mine.status_code == 200
    assert mine.json()["state"] == "ready"
    assert mine.json()["max_attempts"] == 3
    assert fakes.producer.task_events(pipeline["id"]) == []
