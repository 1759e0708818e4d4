"""The `wsched` CLI against the real API and scheduler, as a tenant would use it."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack, drain, ok, wsched

pytestmark = pytest.mark.integration


async def test_the_readme_walkthrough_with_the_cli(stack: Stack) -> None:
    tenant = json.loads(ok(wsched(stack, "tenants", "create", "acme")))
    key = tenant["api_key"]
    ok(wsched(stack, "apps", "create", "shop", key=key))
    created = json.loads(
        ok(
            wsched(
                stack,
                "pipelines",
                "create",
                "shop",
                "echo",
                "--chart",
                "charts/examples/echo",
                key=key,
            )
        )
    )
    assert created["state"] == "ready" and created["worker_token"].startswith("wst_")
    updated = wsched(
        stack, "pipelines", "update", "shop", "echo", "--scaling", '{"max_replicas": 3}', key=key
    )
    assert json.loads(ok(updated))["scaling"] == {"max_replicas": 3}
    not_a_mapping = wsched(
        stack, "pipelines", "update", "shop", "echo", "--scaling", "[1]", key=key
    )
    assert not_a_mapping.returncode == 2
    assert "--scaling must be a mapping" in not_a_mapping.stderr
    refused = wsched(
        stack, "pipelines", "update", "shop", "echo", "--scaling", '{"max_replica": 3}', key=key
    )
    assert refused.returncode != 0
    assert "scaling.max_replica is not a scaling setting" in refused.stderr
    single = json.loads(
        ok(
            wsched(
                stack,
                "tasks",
                "submit",
                "shop",
                "echo",
                '{"message": "hi"}',
                "--id",
                "greeting",
                key=key,
            )
        )
    )
    assert single == {"id": "greeting", "status": "queued"}
    later = wsched(
        stack,
        "tasks",
        "submit",
        "shop",
        "echo",
        '{"message": "later"}',
        "--id",
        "later",
        "--delay",
        "1s",
        key=key,
    )
    assert json.loads(ok(later)) == {"id": "later", "status": "scheduled"}
    too_far = wsched(stack, "tasks", "submit", "shop", "echo", "{}", "--delay", "400d", key=key)
    assert too_far.returncode == 1 and "422 invalid_request: delay:" in too_far.stderr
    lines = "\n".join(json.dumps({"message": f"m{i}"}) for i in range(30))
    batch = wsched(stack, "tasks", "submit", "shop", "echo", key=key, stdin=lines)
    assert "queued 30 of 30 tasks" in ok(batch) + batch.stderr
    await drain(stack, created["id"], created["worker_token"], 32)
    watched = wsched(
        stack, "tasks", "watch", "shop", "echo", "--until-done", "--interval-s", "0.3", key=key
    )
    assert json.loads(ok(watched))["succeeded"] == 32
    task = json.loads(ok(wsched(stack, "tasks", "get", "shop", "echo", "greeting", key=key)))
    assert task["status"] == "succeeded" and task["result"] == {"message": "hi"}
    listing = ok(wsched(stack, "tasks", "list", "shop", "echo", "--status", "succeeded", key=key))
    assert "greeting" in listing


def test_cli_errors_say_what_was_wrong(stack: Stack) -> None:
    no_key = wsched(stack, "apps", "list")
    assert no_key.returncode == 2 and "WSCHED_API_KEY" in no_key.stderr
    wrong = wsched(stack, "apps", "list", key="wsk_wrong")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    bad_json = wsched(stack, "tasks", "submit", "shop", "echo", "{not json", key="wsk_x")
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr
