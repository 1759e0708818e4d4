"""The Python SDK against the real API and scheduler (processes, real Kafka and TiDB), as
a program using it would: create, submit one and many, wait for results, resubmit,
cancel, read attempts, and the errors a user meets."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

import wsched
from tests.e2e.conftest import OPERATOR, Stack, drain

pytestmark = pytest.mark.integration


async def test_a_program_drives_the_product_through_the_sdk(stack: Stack) -> None:
    with wsched.Client(stack.api, api_key=OPERATOR) as operator:
        tenant = operator.tenants.create(f"sdk-{uuid.uuid4().hex[:6]}")
        assert tenant.name in {t.name for t in operator.tenants.list()}
    async with wsched.AsyncClient(stack.api, api_key=tenant.api_key, batch_items=10) as sdk:
        await sdk.applications.create("shop")
        created = await sdk.pipelines.create(
            "shop", "echo", chart="charts/examples/echo", lease_timeout_s=5, wait_ready_s=60
        )
        assert created.state == "ready" and created.worker_token.startswith("wst_")
        tasks = sdk.tasks("shop", "echo")
        greeting = await tasks.submit({"message": "hi"}, id="greeting")
        many = [wsched.TaskSpec(data={"n": i}, id=f"n{i}") for i in range(25)]
        outcome = await tasks.submit_many(many)  # three requests of at most 10
        later = await tasks.submit({"later": True}, delay="1h", expires_after="2h")
        assert (greeting.status, later.status, outcome.queued) == ("queued", "scheduled", 25)

        result, _ = await asyncio.gather(
            greeting.result(timeout=60),
            drain(stack, created.id, created.worker_token, 26),
        )
        assert result == {"message": "hi"}

        again = await tasks.submit({"message": "hi"}, id="greeting")
        assert again.existing is not None and again.existing.status == "succeeded"
        with pytest.raises(wsched.Conflict) as conflict:
            await tasks.submit({"message": "other"}, id="greeting")
        assert conflict.value.error == "task_conflict"
        replayed = await tasks.submit_many(many)
        assert (replayed.queued, replayed.existing) == (0, 25)

        task = await tasks.get("greeting", attempts=True)
        assert task.attempts is not None and [a.worker for a in task.attempts] == ["cli-worker"]
        done = [t.id async for t in tasks.iterate(status="succeeded", page_size=10)]
        assert sorted(done) == sorted(["greeting", *(f"n{i}" for i in range(25))])

        assert (await later.cancel()).status == "cancelling"
        assert (await later.wait(timeout=30)).status == "cancelled"
        assert (await tasks.requeue_many(limit=10)).acted == 0


async def test_errors_carry_the_api_code_and_detail(stack: Stack) -> None:
    async with wsched.AsyncClient(stack.api, api_key="wsk_unknown") as stranger:
        with pytest.raises(wsched.Unauthorized):
            await stranger.applications.list()
    with wsched.Client(stack.api, api_key=OPERATOR) as operator:
        key = operator.tenants.create(f"sdk-{uuid.uuid4().hex[:6]}").api_key
    with wsched.Client(stack.api, api_key=key) as sdk:
        with pytest.raises(wsched.NotFound) as missing:
            sdk.tasks("shop", "nope").get("x")
        assert missing.value.error == "not_found" and "no application" in missing.value.detail
        sdk.applications.create("shop")
        with pytest.raises(wsched.Conflict) as taken:
            sdk.applications.create("shop")
        assert taken.value.error == "name_taken"
        with pytest.raises(wsched.InvalidRequest, match="422 invalid_request: delay:"):
            sdk.tasks("shop", "nope").submit({}, delay="400d")


async def test_a_schedule_fires_pauses_triggers_and_backfills_through_the_sdk(
    stack: Stack,
) -> None:
    with wsched.Client(stack.api, api_key=OPERATOR) as operator:
        key = operator.tenants.create(f"sdk-{uuid.uuid4().hex[:6]}").api_key
    async with wsched.AsyncClient(stack.api, api_key=key) as sdk:
        await sdk.applications.create("shop")
        pipeline = await sdk.pipelines.create(
            "shop", "echo", chart="charts/examples/echo", wait_ready_s=60
        )
        schedules = sdk.schedules("shop", "echo")
        created = await schedules.create("tick", every="1s", data={"tick": True})
        assert created.every == "1s" and len(created.next_fire_times) == 5

        fired = await _runs_appear(schedules, "tick", count=2)
        assert all(r.task_id.startswith(f"{created.id}@") for r in fired)
        assert fired[0].fire_at > fired[-1].fire_at  # latest first

        paused = await schedules.pause("tick")
        assert paused.paused and paused.next_fire_times == ()
        run = await schedules.trigger("tick")  # runs although paused
        worker = asyncio.create_task(drain(stack, pipeline.id, pipeline.worker_token, 10_000))
        try:
            assert await run.result(timeout=60) == {"tick": True}
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

        oldest = fired[-1]
        backfilled = await schedules.backfill(
            "tick", start=oldest.fire_at, end=oldest.fire_at + dt.timedelta(seconds=2)
        )
        assert backfilled.runs == 3 and backfilled.task_ids[0] == oldest.task_id
        assert [r.task_id for r in await schedules.runs("tick", at=oldest.fire_at)] == [
            oldest.task_id
        ]
        assert [s.name async for s in schedules.iterate()] == ["tick"]

        await schedules.delete("tick")
        with pytest.raises(wsched.NotFound):
            await schedules.get("tick")


async def _runs_appear(
    schedules: wsched.AsyncSchedules, name: str, *, count: int
) -> tuple[wsched.ScheduleRun, ...]:
    """The schedule's runs once it has fired ``count`` times (a run is written when fired)."""
    async with asyncio.timeout(30):
        while len(runs := await schedules.runs(name, limit=count)) < count:
            await asyncio.sleep(0.5)
    return runs
