"""Size and count bounds: 413 with what to do, never a 500 and never a partial submit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from services.api.limits import Limits
from services.settings import Settings
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer

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
