"""Pipelines: the settings as the API spells them, and waiting until one is ready."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer


def pipeline_json(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "p1",
        "name": "echo",
        "application": "shop",
        "chart": "charts/examples/echo",
        "chart_version": None,
        "values": {},
        "partitions": 2,
        "scaling": {},
        "max_attempts": 3,
        "retry": {"max_attempts": 3, "backoff": {}},
        "lease_timeout_s": 30,
        "retention_s": 604800,
        "expires_after_s": None,
        "state": state,
        "reason": "",
        "deployment": {},
        "topic": "wsched.p.p1",
        "counts": {},
        "created_at": "2026-11-26T12:00:00Z",
        "updated_at": "2026-11-26T12:00:00Z",
        **extra,
    }


def client(api: FakeApi, clock: Clock) -> wsched.Client:
    return wsched.Client(
        "http://api", api_key="k", transport=api.transport(), sleep=clock.sleep, clock=clock
    )


def test_create_sends_the_settings_given_and_waits_until_ready() -> None:
    created = pipeline_json("provisioning", worker_token="wst_1")
    api = FakeApi().then(answer(201, created), answer(200, pipeline_json("provisioning")))
    api.then(answer(200, pipeline_json("ready")))
    clock = Clock()
    with client(api, clock) as sdk:
        pipeline = sdk.pipelines.create(
            "shop",
            "echo",
            chart="charts/examples/echo",
            partitions=4,
            scaling={"max_replicas": 3},
            retention=dt.timedelta(days=7),
            expires_after="1h",
            wait_ready_s=30,
        )
    assert api.bodies()[0] == {
        "name": "echo",
        "chart": "charts/examples/echo",
        "partitions": 4,
        "scaling": {"max_replicas": 3},
        "retention": "604800s",
        "expires_after": "1h",
    }
    assert (pipeline.state, pipeline.raw["state"], pipeline.worker_token) == (
        "ready",
        "ready",
        "wst_1",
    )
    assert clock.slept == [0.5]


def test_a_shared_pipeline_is_asked_for_by_its_topic_and_shown_as_such() -> None:
    created = pipeline_json(
        "provisioning",
        worker_token="wst_1",
        topic_mode="shared",
        topic="wsched.shared",
        partitions=1,
    )
    api = FakeApi().then(answer(201, created), answer(200, pipeline_json("ready")))
    with client(api, Clock()) as sdk:
        pipeline = sdk.pipelines.create(
            "shop", "echo", chart="charts/examples/echo", topic="shared"
        )
        # An API from before the choice: every pipeline had a topic of its own.
        older = sdk.pipelines.get("shop", "echo")
    assert api.bodies()[0] == {"name": "echo", "chart": "charts/examples/echo", "topic": "shared"}
    assert (pipeline.topic_mode, pipeline.topic, pipeline.partitions) == (
        "shared",
        "wsched.shared",
        1,
    )
    assert older.topic_mode == "dedicated"


def test_a_failed_provisioning_raises_with_its_reason() -> None:
    api = FakeApi().then(answer(200, pipeline_json("failed", reason="chart not found")))
    with client(api, Clock()) as sdk, pytest.raises(wsched.PipelineFailed, match="chart not"):
        sdk.pipelines.wait_ready("shop", "echo")


def test_waiting_for_ready_is_bounded() -> None:
    api = FakeApi().then(*[answer(200, pipeline_json("provisioning"))] * 10)
    with client(api, Clock()) as sdk, pytest.raises(wsched.PipelineTimeout, match="within 2s"):
        sdk.pipelines.wait_ready("shop", "echo", timeout_s=2)


def test_update_sends_only_what_changes_and_zero_clears_a_deadline() -> None:
    api = FakeApi().then(answer(200, pipeline_json("provisioning")))
    backoff = wsched.Backoff(initial="500ms", max="2m")
    with client(api, Clock()) as sdk:
        sdk.pipelines.update(
            "shop", "echo", expires_after=0, retry=wsched.TaskRetry(max_attempts=5, backoff=backoff)
        )
    assert api.requests[0].method == "PATCH"
    assert api.bodies()[0] == {
        "expires_after": 0,
        "retry": {
            "max_attempts": 5,
            "backoff": {"initial": "500ms", "multiplier": 2.0, "max": "2m", "jitter": 0.1},
        },
    }
