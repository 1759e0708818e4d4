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
    future = ["--created-after", "2099-01-01T00:00:00Z"]
    assert "greeting" not in ok(wsched(stack, "tasks", "list", "shop", "echo", *future, key=key))
    past = ["--created-after", "2020-01-01T00:00:00Z", "--created-before", "2099-01-01T00:00:00Z"]
    assert "greeting" in ok(wsched(stack, "tasks", "list", "shop", "echo", *past, key=key))


def test_cli_errors_say_what_was_wrong(stack: Stack) -> None:
    no_key = wsched(stack, "apps", "list")
    assert no_key.returncode == 2 and "WSCHED_API_KEY" in no_key.stderr
    wrong = wsched(stack, "apps", "list", key="wsk_wrong")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    bad_json = wsched(stack, "tasks", "submit", "shop", "echo", "{not json", key="wsk_x")
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr


def test_the_readme_schedules_walkthrough_with_the_cli(stack: Stack) -> None:
    """README "Schedule work", the CLI form, command for command."""
    key = json.loads(ok(wsched(stack, "tenants", "create", "sched")))["api_key"]

    def cli(*args: str) -> str:
        return ok(wsched(stack, *args, key=key))

    cli("apps", "create", "shop")
    cli("pipelines", "create", "shop", "echo", "--chart", "charts/examples/echo")
    made = cli(
        "schedules", "create", "shop", "echo", "morning-report", "--cron", "0 9 * * MON-FRI",
        "--timezone", "Europe/Paris", "--data", '{"message": "good morning"}',
        "--overlap", "skip", "--jitter", "30s",
    )  # fmt: skip
    assert "09:00 Europe/Paris)" in made and "overlap skip, jitter up to 30s" in made
    cli("schedules", "create", "shop", "echo", "tick", "--every", "10s",
        "--data", '{"message": "tick"}')  # fmt: skip
    shown = cli("schedules", "get", "shop", "echo", "tick")
    assert shown.startswith("tick  (active; id ") and "when       every 10s" in shown
    assert "runs       overlap allow, catch-up latest within 1 h" in shown
    assert shown.count(" UTC)") == 5  # the next five fire times, in UTC only
    listing = cli("schedules", "list", "shop", "echo")
    assert "morning-report" in listing and "every 10s" in listing
    cli("schedules", "runs", "shop", "echo", "tick")
    assert "(paused;" in cli("schedules", "pause", "shop", "echo", "tick")
    run = json.loads(cli("schedules", "trigger", "shop", "echo", "morning-report"))
    assert "@" in run["id"] and run["status"] == "queued"
    backfill = ("--from", "2026-11-02T00:00:00Z", "--to", "2026-11-06T23:59:59Z")
    filled = json.loads(cli("schedules", "backfill", "shop", "echo", "morning-report", *backfill))
    assert filled["runs"] == 5
    cli("schedules", "runs", "shop", "echo", "morning-report", "--at", "2026-11-03T08:00:00Z")
    changed = cli(
        "schedules", "update", "shop", "echo", "tick", "--every", "1m", "--catchup-policy", "none"
    )
    assert "every 1m" in changed and "catch-up none within 1 h" in changed
    cli("schedules", "delete", "shop", "echo", "tick")
    as_json = json.loads(cli("schedules", "list", "shop", "echo", "--json"))
    assert [s["name"] for s in as_json["schedules"]] == ["morning-report"]
