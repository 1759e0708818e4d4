"""AsyncClient sends the same calls as Client: the same retries, batches and waits."""

from __future__ import annotations

import httpx
import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer, batch_answer, error, task_json


def client(api: FakeApi, clock: Clock, **options: object) -> wsched.AsyncClient:
    return wsched.AsyncClient(
        "http://api",
        api_key="k",
        transport=httpx.MockTransport(api.handle),
        sleep=clock.async_sleep,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def test_submit_many_retries_with_the_same_ids() -> None:
    api = FakeApi().then(error(429, "rate_limited", "slow down", "2"), batch_answer)
    clock = Clock()
    async with client(api, clock) as sdk:
        outcome = await sdk.tasks("shop", "echo").submit_many([{"n": 1}, {"n": 2}])
    assert clock.slept == [2.0] and outcome.queued == 2
    assert api.requests[0].content == api.requests[1].content


async def test_submit_then_result() -> None:
    api = FakeApi().then(lambda r: answer(202, {"id": r.url.params["id"], "status": "queued"}))
    api.then(
        answer(200, task_json("x", "queued")), answer(200, task_json("x", "succeeded", result=7))
    )
    clock = Clock()
    async with client(api, clock) as sdk:
        handle = await sdk.tasks("shop", "echo").submit({"n": 1}, delay="5s")
        assert await handle.result(timeout=10) == 7
    assert api.requests[0].url.params["delay"] == "5s"
    assert api.requests[1].url.path.endswith(f"/tasks/{handle.id}")


async def test_errors_and_listing() -> None:
    page = {"tasks": [task_json("a", "queued")], "next_cursor": None}
    api = FakeApi().then(error(404, "not_found", "no application named 'shop'"))
    api.then(answer(200, page))
    async with client(api, Clock()) as sdk:
        with pytest.raises(wsched.NotFound, match="no application"):
            await sdk.pipelines.list("shop")
        listed = [t.id async for t in sdk.tasks("shop", "echo").iterate()]
    assert listed == ["a"]
