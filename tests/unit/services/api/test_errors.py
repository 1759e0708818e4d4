"""Every error is ``{"error", "detail"}`` with a useful detail; bad input is never a 500."""

from __future__ import annotations

import re

import httpx
import pytest
import sqlalchemy as sa

from tests.unit.services.api.harness import OPERATOR, Api, assert_error, bearer


async def test_unknown_routes_and_methods_use_the_error_shape(api: Api) -> None:
    assert "/docs" in assert_error(await api.client.get("/api/nothing"), 404, "not_found")
    answer = await api.client.put("/api/tenants", json={}, headers=OPERATOR)
    assert "/docs" in assert_error(answer, 405, "method_not_allowed")


@pytest.mark.parametrize(
    "name",
    ["", "A", "1abc", "-abc", "abc_def", "abc def", "é", "a" * 41, "abc/def", "abc\n"],
)
async def test_bad_names_are_422_with_the_rule_spelled_out(api: Api, name: str) -> None:
    answer = await api.client.post("/api/tenants", json={"name": name}, headers=OPERATOR)
    detail = assert_error(answer, 422, "invalid_request")
    assert "name" in detail
    assert "1 to 40 lowercase letters" in detail


@pytest.mark.parametrize("name", ["a", "a-1", "abc-def-9", "a" * 40])
async def test_good_names_are_accepted(api: Api, name: str) -> None:
    answer = await api.client.post("/api/tenants", json={"name": name}, headers=OPERATOR)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == name


async def test_malformed_json_is_400(api: Api) -> None:
    answer = await api.client.post(
        "/api/tenants",
        content=b'{"name": ',
        headers={**OPERATOR, "Content-Type": "application/json"},
    )
    assert "not valid JSON" in assert_error(answer, 400, "malformed_json")


async def test_a_missing_field_names_the_field(api: Api) -> None:
    answer = await api.client.post("/api/tenants", json={}, headers=OPERATOR)
    assert "name: Field required" in assert_error(answer, 422, "invalid_request")


async def test_an_unknown_field_is_refused(api: Api) -> None:
    answer = await api.client.post(
        "/api/tenants", json={"name": "ok", "colour": "red"}, headers=OPERATOR
    )
    assert "colour" in assert_error(answer, 422, "invalid_request")


async def test_a_body_without_json_content_type_gets_a_hint(api: Api) -> None:
    answer = await api.client.post(
        "/api/tenants",
        content=b'{"name": "ok"}',
        headers={**OPERATOR, "Content-Type": "text/plain"},
    )
    assert "Content-Type: application/json" in assert_error(answer, 422, "invalid_request")


async def test_duplicate_names_are_409(api: Api) -> None:
    key = await api.tenant("acme")
    again = await api.client.post("/api/tenants", json={"name": "acme"}, headers=OPERATOR)
    assert "acme" in assert_error(again, 409, "name_taken")
    await api.application(key, "web")
    again = await api.client.post("/api/applications", json={"name": "web"}, headers=bearer(key))
    assert "web" in assert_error(again, 409, "name_taken")


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("partitions", 0, "partitions"),
        ("partitions", 1000, "partitions"),
        ("max_attempts", 0, "max_attempts"),
        ("lease_timeout_s", -1, "lease_timeout_s"),
        ("retention", "7 days", "retention"),
        ("retention", 5, "retention"),
        ("chart", "", "chart"),
        ("values", [1, 2], "values"),
    ],
)
async def test_bad_pipeline_fields_are_422(
    api: Api, field: str, value: object, needle: str
) -> None:
    key = await api.tenant("acme")
    await api.application(key, "web")
    body = {"name": "p", "chart": "./c", field: value}
    answer = await api.client.post(
        "/api/applications/web/pipelines", json=body, headers=bearer(key)
    )
    assert needle in assert_error(answer, 422, "invalid_request")


async def test_many_validation_errors_are_summarised(api: Api) -> None:
    key = await api.tenant("acme")
    await api.application(key, "web")
    await api.pipeline(key, "web", "p")
    body = {"tasks": [{"data": i} for i in range(20)]}
    answer = await api.client.post(
        "/api/applications/web/pipelines/p/tasks", json=body, headers=bearer(key)
    )
    detail = assert_error(answer, 422, "invalid_request")
    assert "tasks.0.data" in detail
    assert "and 15 more" in detail


async def test_an_unexpected_error_is_a_generic_500_with_an_incident_id(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    statement = "SELECT api_key_hash FROM tenants WHERE name = %(name)s"
    failure = sa.exc.DataError(statement, {"name": "acme"}, Exception("/srv/wsched/secret.py"))

    def broken(*_: object, **__: object) -> None:
        raise failure

    monkeypatch.setattr(api.store, "list_tenants", broken)
    # The app re-raises after answering, for the server to log; a server answers anyway.
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        answer = await client.get("/api/tenants", headers=OPERATOR)
    detail = assert_error(answer, 500, "internal")
    for leak in ("SELECT", "tenants", "acme", "/srv", "Traceback", "DataError"):
        assert leak not in answer.text
    incident = re.search(r"incident ([0-9a-f]{16})", detail)
    assert incident is not None, detail
    (logged,) = [r for r in caplog.records if incident.group(1) in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[1] is failure


async def test_every_route_documents_its_errors_in_the_error_shape(api: Api) -> None:
    """Clients and contract tests trust the OpenAPI: an error a route answers is listed,
    in the shape it has (not FastAPI's default validation-error list)."""
    document = api.app.openapi()
    error_body = document["paths"]["/api/tenants"]["post"]["responses"]["401"]["content"]
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})
    for path, operations in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "413", "422", "503"):
                assert status in responses, (method, path, status)
            if not path.startswith("/api/tenants"):
                assert "404" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert response["content"] == error_body, (method, path, status)


async def test_probes_document_what_they_answer(api: Api) -> None:
    paths = api.app.openapi()["paths"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    metrics = await api.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
