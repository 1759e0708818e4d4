"""The product as a tenant and a worker use it: the API and a scheduler as processes, over
real Kafka and TiDB. Create a pipeline, submit, work, read status; cancel."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from protos.wsched.v1 import worker_pb2
from services.worker.client import SchedulerClient
from tests.e2e.conftest import OPERATOR, Stack

pytestmark = pytest.mark.integration


@dataclass(frozen=True, kw_only=True)
class Tenant:
    http: httpx.AsyncClient
    pipeline_url: str
    pipeline_id: str
    worker_token: str
    name: str


@pytest.fixture
async def tenant(stack: Stack) -> AsyncIterator[Tenant]:
    tenant_name = f"acme-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=stack.api, timeout=30) as http:
        created = await http.post(
            "/api/tenants",
            json={"name": tenant_name},
            headers={"Authorization": f"Bearer {OPERATOR}"},
        )
        assert created.status_code == 201, created.text
        http.headers["Authorization"] = f"Bearer {created.json()['api_key']}"
        assert (await http.post("/api/applications", json={"name": "shop"})).status_code == 201
        pipeline = await http.post(
            "/api/applications/shop/pipelines",
            json={"name": "echo", "chart": "charts/examples/echo", "lease_timeout_s": 5},
        )
        assert pipeline.status_code == 201, pipeline.text
        url = "/api/applications/shop/pipelines/echo"
        async with asyncio.timeout(60):
            while (await http.get(url)).json()["state"] != "ready":
                await asyncio.sleep(0.3)
        body = pipeline.json()
        yield Tenant(
            http=http,
            pipeline_url=url,
            pipeline_id=body["id"],
            worker_token=body["worker_token"],
            name=tenant_name,
        )


async def work(stack: Stack, tenant: Tenant, count: int) -> list[worker_pb2.LeasedTask]:
    """Poll until ``count`` tasks arrived; report each with its data as the result."""
    client = SchedulerClient(
        addresses=[stack.grpc],
        pipeline_id=tenant.pipeline_id,
        token=tenant.worker_token,
        worker="e2e-worker",
    )
    got: list[worker_pb2.LeasedTask] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < count:
                reply = await client.poll(max_tasks=count - len(got), wait_ms=2000)
                got.extend(reply.tasks)
        answer = await client.report(
            [
                worker_pb2.TaskResult(
                    lease_token=t.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED, result=t.data
                )
                for t in got
            ]
        )
        assert {a.ack for a in answer.acks} == {worker_pb2.ACK_ACCEPTED}
    finally:
        await client.close()
    return got


async def status(tenant: Tenant, task_id: str, wanted: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            answer = await tenant.http.get(f"{tenant.pipeline_url}/tasks/{task_id}")
            if answer.status_code == 200 and answer.json()["status"] == wanted:
                body: dict[str, Any] = answer.json()
                return body
            await asyncio.sleep(0.2)


async def test_submit_single_and_batch_then_read_results(stack: Stack, tenant: Tenant) -> None:
    single = await tenant.http.post(
        tenant.pipeline_url,
        content=b'{"message": "hello"}',
        headers={"Content-Type": "application/json"},
    )
    assert single.status_code == 202 and single.json()["status"] == "queued"
    batch = await tenant.http.post(
        f"{tenant.pipeline_url}/tasks",
        json={"tasks": [{"data": {"message": f"m{i}"}, "id": f"order-{i}"} for i in range(20)]},
    )
    assert batch.status_code == 202 and batch.json()["queued"] == 20
    # The seed design's KEDA gauge, labelled with the pipeline's release and namespace.
    gauge = (
        f'server_scheduler_queue_length{{namespace="wsched-{tenant.name}",'
        f'worker="{tenant.name}-shop-echo"}} 21.0'
    )
    async with asyncio.timeout(30):
        while gauge not in (await tenant.http.get(stack.metrics)).text:
            await asyncio.sleep(0.3)
    leased = await work(stack, tenant, 21)
    assert sorted(json.loads(t.data)["message"] for t in leased) == sorted(
        ["hello"] + [f"m{i}" for i in range(20)]
    )
    done = await status(tenant, single.json()["id"], "succeeded")
    assert done["result"] == {"message": "hello"} and done["attempt"] == 1
    assert done["worker"] == "e2e-worker" and done["finished_at"] is not None
    again = await tenant.http.post(
        f"{tenant.pipeline_url}/tasks",
        json={"tasks": [{"data": {"message": "m3"}, "id": "order-3"}]},
    )
    assert again.json()["results"][0]["result"] == "existing"
    async with asyncio.timeout(30):
        while (await tenant.http.get(f"{tenant.pipeline_url}/stats")).json()["counts"].get(
            "succeeded"
        ) != 21:
            await asyncio.sleep(0.5)


async def test_cancel_a_queued_task_and_a_leased_one(stack: Stack, tenant: Tenant) -> None:
    queued = (await tenant.http.post(tenant.pipeline_url, json={"n": 1})).json()["id"]
    await status(tenant, queued, "queued")
    assert (await tenant.http.delete(f"{tenant.pipeline_url}/tasks/{queued}")).status_code == 202
    await status(tenant, queued, "cancelled")

    leased_id = (await tenant.http.post(tenant.pipeline_url, json={"n": 2})).json()["id"]
    client = SchedulerClient(
        addresses=[stack.grpc],
        pipeline_id=tenant.pipeline_id,
        token=tenant.worker_token,
        worker="w",
    )
    try:
        async with asyncio.timeout(30):
            tasks: list[worker_pb2.LeasedTask] = []
            while not tasks:
                tasks = list((await client.poll(max_tasks=1, wait_ms=2000)).tasks)
        (task,) = tasks
        assert task.task_id == leased_id
        assert (
            await tenant.http.delete(f"{tenant.pipeline_url}/tasks/{leased_id}")
        ).status_code == 202
        async with asyncio.timeout(30):
            while True:
                beat = await client.heartbeat([task.lease_token])
                if beat.verdicts[0].verdict == worker_pb2.VERDICT_CANCELLED:
                    break
                await asyncio.sleep(0.2)
        await client.report(
            [
                worker_pb2.TaskResult(
                    lease_token=task.lease_token, outcome=worker_pb2.OUTCOME_CANCELLED
                )
            ]
        )
    finally:
        await client.close()
    await status(tenant, leased_id, "cancelled")


async def gone(tenant: Tenant, task_id: str) -> None:
    async with asyncio.timeout(30):
        while (await tenant.http.get(f"{tenant.pipeline_url}/tasks/{task_id}")).status_code != 404:
            await asyncio.sleep(0.2)


async def test_dead_tasks_are_purged_by_their_grain_after_a_requeue_sent_before(
    stack: Stack, tenant: Tenant
) -> None:
    """A task's own timeout reaches its worker; failed tasks with one attempt die; a purge
    deletes the dead ones, except one requeued just before (the grain applies the two
    records in the order sent: same key, same partition)."""
    once = {"max_attempts": 1}
    batch = await tenant.http.post(
        f"{tenant.pipeline_url}/tasks",
        json={
            "tasks": [
                {"id": "d1", "data": {"n": 1}, "retry": once, "execution_timeout": "3s"},
                {"id": "d2", "data": {"n": 2}, "retry": once},
                {"id": "d3", "data": {"n": 3}, "retry": once},
                {"id": "s1", "data": {"n": 4}},
            ]
        },
    )
    assert batch.status_code == 202, batch.text
    client = SchedulerClient(
        addresses=[stack.grpc],
        pipeline_id=tenant.pipeline_id,
        token=tenant.worker_token,
        worker="w",
    )
    try:
        got: list[worker_pb2.LeasedTask] = []
        async with asyncio.timeout(60):
            while len(got) < 4:
                got.extend((await client.poll(max_tasks=4 - len(got), wait_ms=2000)).tasks)
        assert {t.task_id: t.execution_timeout_ms for t in got} == {
            "d1": 3000,
            "d2": 0,
            "d3": 0,
            "s1": 0,
        }
        fail, succeed = worker_pb2.OUTCOME_FAILED, worker_pb2.OUTCOME_SUCCEEDED
        await client.report(
            [
                worker_pb2.TaskResult(
                    lease_token=t.lease_token,
                    outcome=succeed if t.task_id == "s1" else fail,
                    error="" if t.task_id == "s1" else "timed out after 3 s",
                    timed_out=t.task_id == "d1",
                )
                for t in got
            ]
        )
    finally:
        await client.close()
    for task_id in ("d1", "d2", "d3"):
        await status(tenant, task_id, "dead")
    assert (await tenant.http.post(f"{tenant.pipeline_url}/tasks/d3/requeue")).status_code == 202
    purge = await tenant.http.post(
        f"{tenant.pipeline_url}/tasks:purge",
        json={"status": "dead", "older_than": "0s", "ids": ["d1", "d2", "d3", "s1"]},
    )
    assert purge.status_code == 202, purge.text
    results = {r["id"]: r["result"] for r in purge.json()["results"]}
    assert results["d1"] == results["d2"] == "purging" and results["s1"] == "skipped"
    await gone(tenant, "d1")
    await gone(tenant, "d2")
    await status(tenant, "d3", "queued")  # requeued first: the purge found it no longer dead
    await status(tenant, "s1", "succeeded")
    async with asyncio.timeout(30):
        while (await tenant.http.get(f"{tenant.pipeline_url}/stats")).json()["counts"]["dead"]:
            await asyncio.sleep(0.3)
