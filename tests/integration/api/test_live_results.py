"""Live results (D6) end to end in one process: the API and a scheduler replica over the
real Kafka and TiDB, a worker over gRPC. A waiter is answered when its task finishes;
the event stream shows the task's changes and resumes after a Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protos.wsched.v1 import worker_pb2
from services.scheduler.host import SchedulerHost
from tests.integration.api.conftest import LIMITS
from tests.integration.scheduler.conftest import settings_for as scheduler_settings
from tests.integration.scheduler.conftest import stub, wait_hosted
from tests.unit.services.api.harness import Api, bearer, running_api, settings_for
from tests.unit.services.live.test_sse import parse

pytestmark = pytest.mark.integration

PIPELINE = "/api/applications/a/pipelines/p"


@pytest.fixture
async def system(
    tidb_api_url: str, kafka_bootstrap: str, tidb_url: str, kafka_group: str
) -> AsyncIterator[tuple[Api, SchedulerHost]]:
    settings = settings_for(tidb_api_url, kafka_bootstrap=kafka_bootstrap)
    replica = scheduler_settings(kafka_bootstrap, tidb_url, kafka_group)
    # No metrics port: a fixed one may be taken by another test run on this machine.
    replica = replica.model_copy(update={"metrics_port": 0})
    async with (
        running_api(settings, limits=LIMITS) as api,
        SchedulerHost(settings=replica, rescan_s=1) as host,
    ):
        yield api, host


async def ready(api: Api, host: SchedulerHost) -> tuple[str, dict[str, Any]]:
    key, pipeline = await api.ready_pipeline()
    await wait_hosted(host, pipeline["id"])
    return key, pipeline


async def submit(api: Api, key: str, task_id: str) -> None:
    answer = await api.client.post(
        PIPELINE, json={"n": 1}, params={"id": task_id}, headers=bearer(key)
    )
    assert answer.status_code == 202, answer.text


async def run_one(host: SchedulerHost, pipeline: dict[str, Any]) -> float:
    """Poll one task, report it succeeded; the monotonic time its report was acknowledged
    (acknowledged means durable in TiDB)."""
    channel, worker = stub(host)
    auth = (("authorization", f"Bearer {pipeline['worker_token']}"),)
    async with channel, asyncio.timeout(30):
        tasks: list[worker_pb2.LeasedTask] = []
        while not tasks:
            reply = await worker.Poll(
                worker_pb2.PollRequest(
                    pipeline_id=pipeline["id"], worker="w1", max_tasks=1, wait_ms=2000
                ),
                metadata=auth,
            )
            tasks = list(reply.tasks)
        result = worker_pb2.TaskResult(
            lease_token=tasks[0].lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED, result=b'"ok"'
        )
        await worker.Report(
            worker_pb2.ReportRequest(pipeline_id=pipeline["id"], worker="w1", results=[result]),
            metadata=auth,
        )
    return time.monotonic()


async def test_a_waiter_is_answered_promptly_when_its_task_finishes(
    system: tuple[Api, SchedulerHost],
) -> None:
    api, host = system
    key, pipeline = await ready(api, host)
    await submit(api, key, "t1")
    waiting = asyncio.create_task(
        api.client.get(f"{PIPELINE}/tasks/t1", params={"wait": "30s"}, headers=bearer(key))
    )
    acknowledged = await run_one(host, pipeline)
    answer = await asyncio.wait_for(waiting, 30)
    answered = time.monotonic()
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    # Not a poll interval nor the timeout: the event, then one read of the row.
    assert answered - acknowledged < 3.0, answered - acknowledged


async def test_the_stream_shows_a_tasks_changes_and_resumes_after_an_id(
    system: tuple[Api, SchedulerHost],
) -> None:
    api, host = system
    key, pipeline = await ready(api, host)
    streaming = asyncio.create_task(
        api.client.get(f"{PIPELINE}/events", params={"duration": "8s"}, headers=bearer(key))
    )
    await asyncio.sleep(1.0)  # the stream is open before anything happens
    await submit(api, key, "t1")
    await run_one(host, pipeline)
    answer = await asyncio.wait_for(streaming, 30)
    assert answer.status_code == 200, answer.text
    events = [e for e in parse(answer.text) if e["event"] == "tasks"]
    changes = [(c["id"], c["status"]) for e in events for c in json.loads(e["data"])["changes"]]
    mine = [s for t, s in changes if t == "t1"]
    # A grant and its report may share a flush: then "leased" is never durable on its own.
    assert mine[0] == "queued" and mine[-1] == "succeeded", mine
    assert json.loads(events[-1]["data"])["counts"]["succeeded"] == 1

    resumed = await api.client.get(
        f"{PIPELINE}/events",
        params={"duration": "1s"},
        headers={**bearer(key), "Last-Event-ID": events[0]["id"]},
    )
    again = [e for e in parse(resumed.text) if e["event"] == "tasks"]
    assert [e["id"] for e in again] == [e["id"] for e in events[1:]]
