"""Size and count bounds: 413 with what to do, never a 500 and never a partial submit."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import pytest

from services.api.limits import Limits
from services.api.schemas import NAME_RE, TASK_ID_RE
from services.settings import Settings
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, running_api, settings_for

SUBMIT = "/api/applications/a/pipelines/p"


def data_of(size: int) -> dict[str, str]:
    """A JSON object whose compact encoding is exactly ``size`` bytes."""
    return {"x": "y" * (size - len('{"x":""}'))}


async def test_single_task_data_over_the_limit_is_413(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    at_limit = json.dumps(data_of(LIMITS.max_task_data_bytes), separators=(",", ":"))
    assert len(at_limit) == LIMITS.max_task_data_bytes
    ok = await api.client.post(SUBMIT, content=at_limit, headers=bearer(key))
    assert ok.status_code == 202, ok.text
    over = await api.client.post(SUBMIT, content=at_limit + " ", headers=bearer(key))
    detail = assert_error(over, 413, "data_too_large")
    assert str(LIMITS.max_task_data_bytes) in detail
    assert len(fakes.producer.task_events(pipeline["id"])) == 1


async def test_batch_item_data_over_the_limit_is_413_naming_the_item(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    items = [{"data": {"n": 1}}, {"data": data_of(LIMITS.max_task_data_bytes + 1)}]
    answer = await api.client.post(f"{SUBMIT}/tasks", json={"tasks": items}, headers=bearer(key))
    assert "tasks[1].data" in assert_error(answer, 413, "data_too_large")
    assert fakes.producer.task_events(pipeline["id"]) == []


async def test_too_many_items_in_a_batch_is_413(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    items = [{"data": {"n": n}} for n in range(LIMITS.max_batch_items + 1)]
    answer = await api.client.post(f"{SUBMIT}/tasks", json={"tasks": items}, headers=bearer(key))
    assert "split the batch" in assert_error(answer, 413, "batch_too_large")
    assert fakes.producer.task_events(pipeline["id"]) == []
    exactly = items[: LIMITS.max_batch_items]
    answer = await api.client.post(f"{SUBMIT}/tasks", json={"tasks": exactly}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert answer.json()["queued"] == LIMITS.max_batch_items


async def test_an_empty_batch_is_422(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.post(f"{SUBMIT}/tasks", json={"tasks": []}, headers=bearer(key))
    assert "tasks" in assert_error(answer, 422, "invalid_request")


async def test_a_body_over_the_request_bound_is_413_from_content_length(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    body = b"x" * (LIMITS.max_request_bytes + 1)
    answer = await api.client.post(f"{SUBMIT}/tasks", content=body, headers=bearer(key))
    assert str(LIMITS.max_request_bytes) in assert_error(answer, 413, "request_too_large")


async def test_a_streamed_body_over_the_request_bound_is_413_while_reading(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(LIMITS.max_request_bytes // 1024 + 2):
            sent += 1024
            yield b"x" * 1024

    answer = await api.client.post(f"{SUBMIT}/tasks", content=chunks(), headers=bearer(key))
    assert "content-length" not in {h.lower() for h in answer.request.headers}
    assert_error(answer, 413, "request_too_large")
    assert sent > LIMITS.max_request_bytes


def test_limits_come_from_the_wsched_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHED_MAX_TASK_DATA_BYTES", "10")
    monkeypatch.setenv("WSCHED_PRODUCE_DEADLINE_S", "1.5")
    limits = Limits.from_settings(Settings())
    assert limits.max_task_data_bytes == 10
    assert limits.produce_deadline_s == 1.5
    assert limits.max_request_bytes == Limits().max_request_bytes


# -- JSON nesting ----------------------------------------------------------------------------

#: Room for bodies nested 100,000 levels deep (200 KB) under the small test limits.
ROOMY = dataclasses.replace(
    LIMITS, max_request_bytes=2 * 1024 * 1024, max_task_data_bytes=1024 * 1024
)


def nested(levels: int, inner: bytes = b"1") -> bytes:
    """``{"x":`` ... ``}`` nested ``levels`` objects deep around ``inner``."""
    return b'{"x":' * levels + inner + b"}" * levels


@pytest.fixture
async def roomy(migrated_sqlite: str, fakes: Fakes) -> AsyncIterator[Api]:
    async with running_api(
        settings_for(migrated_sqlite),
        limits=ROOMY,
        producer=fakes.producer,
        admin=fakes.admin,
        deployer=fakes.deployer,
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (SUBMIT, b"[" * 100_000 + b"]" * 100_000),
        (SUBMIT, nested(100_000)),
        (f"{SUBMIT}/tasks", b'{"tasks":[{"data":' + nested(100_000) + b"}]}"),
        ("/api/applications", b'{"name":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        # unclosed: the parser would recurse before it found out
        (SUBMIT, b"[" * 100_000),
    ],
)
async def test_a_body_nested_100000_levels_deep_is_400_before_parsing(
    roomy: Api, fakes: Fakes, path: str, body: bytes
) -> None:
    key, pipeline = await roomy.ready_pipeline()
    headers = {**bearer(key), "Content-Type": "application/json"}
    answer = await roomy.client.post(path, content=body, headers=headers)
    detail = assert_error(answer, 400, "json_too_deep")
    assert f"more than {ROOMY.max_json_depth} levels deep" in detail
    assert fakes.producer.task_events(pipeline["id"]) == []


async def test_a_body_nested_to_the_limit_passes_and_one_more_level_does_not(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    limit = LIMITS.max_json_depth
    ok = await api.client.post(SUBMIT, content=nested(limit), headers=bearer(key))
    assert ok.status_code == 202, ok.text
    over = await api.client.post(SUBMIT, content=nested(limit + 1), headers=bearer(key))
    assert f"more than {limit} levels" in assert_error(over, 400, "json_too_deep")
    # a batch's own envelope {"tasks": [{"data": ...}]} takes three of the levels
    batch = json.loads(b'{"tasks":[{"data":' + nested(limit - 3) + b"}]}")
    answer = await api.client.post(f"{SUBMIT}/tasks", json=batch, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert len(fakes.producer.task_events(pipeline["id"])) == 2


async def test_brackets_inside_strings_are_text_not_nesting(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    data = {"text": "[{" * 300, "quoted": '\\"[[[' * 50, "list": [[["ok"]]]}
    answer = await api.client.post(SUBMIT, json=data, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    (event,) = fakes.producer.task_events(pipeline["id"])
    assert json.loads(event.submit.data) == data


async def test_a_deep_body_over_the_size_bound_is_413_not_parsed(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    body = b"[" * (LIMITS.max_request_bytes + 1)
    answer = await api.client.post(SUBMIT, content=body, headers=bearer(key))
    assert_error(answer, 413, "request_too_large")


async def test_the_openapi_description_states_the_bounds_in_force(api: Api) -> None:
    description = (await api.client.get("/openapi.json")).json()["info"]["description"]
    for value in (
        LIMITS.max_request_bytes,
        LIMITS.max_json_depth,
        LIMITS.max_task_data_bytes,
        LIMITS.max_batch_items,
    ):
        assert f"at most {value} " in description
    assert "json_too_deep" in description


async def test_the_openapi_schema_states_the_rules_of_names_ids_and_batches(api: Api) -> None:
    """A client (or a generated request) can tell a valid request before it is refused."""
    document = (await api.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    name = {"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 40}
    task_id = {"pattern": TASK_ID_RE.pattern, "minLength": 1, "maxLength": 128}
    for model in ("CreateTenant", "CreateApplication", "CreatePipeline"):
        assert schemas[model]["properties"]["name"].items() >= name.items(), model
    assert schemas["BatchItem"]["properties"]["id"]["anyOf"][0].items() >= task_id.items()
    assert schemas["SubmitBatch"]["properties"]["tasks"]["maxItems"] == LIMITS.max_batch_items
    submit = document["paths"]["/api/applications/{app}/pipelines/{pipeline}"]["post"]
    rules = {"app": name, "pipeline": name, "id": task_id, "idempotency-key": task_id}
    for parameter in submit["parameters"]:
        if parameter["name"] in rules:
            assert parameter["schema"].items() >= rules[parameter["name"]].items(), parameter
    task = document["paths"]["/api/applications/{app}/pipelines/{pipeline}/tasks/{task_id}"]
    (param,) = [p for p in task["get"]["parameters"] if p["name"] == "task_id"]
    assert param["schema"].items() >= task_id.items()
