"""``wsched schedules ...`` speaks HTTP through the SDK: the requests each command sends,
the schedule printed for a person (next fire times in human form) or as the API's JSON
with ``--json``, and errors ending the command with the API's code and detail."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator

import pytest
from rich.console import Console
from typer.testing import CliRunner

import wsched
from services import client_cli, client_cli_schedules
from services.cli import app
from tests.unit.wsched.fakes import FakeApi, answer, error, schedule_json

SCHEDULES = "/api/applications/shop/pipelines/echo/schedules"
NOW = dt.datetime(2026, 11, 27, 0, 56, tzinfo=dt.UTC)  # 4 min before the first fire time


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """The CLI's clients talk to this API; the clock reads ``NOW``; tables are wide."""
    fake = FakeApi()
    client = functools.partial(wsched.Client, transport=fake.transport(), sleep=lambda _: None)
    monkeypatch.setattr(wsched, "Client", client)
    monkeypatch.setattr(client_cli_schedules, "_now", lambda: NOW)
    monkeypatch.setattr(client_cli, "out", Console(soft_wrap=True, width=200))
    monkeypatch.setenv("WSCHED_API_URL", "http://api")
    monkeypatch.setenv("WSCHED_API_KEY", "wsk_tenant")
    yield fake


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_sends_every_option_and_prints_the_next_fire_times(api: FakeApi) -> None:
    api.then(answer(201, schedule_json()))
    code, stdout, stderr = run(
        "schedules", "create", "shop", "echo", "nightly", "--cron", "0 2 * * *",
        "--timezone", "Europe/Paris", "--start-at", "2026-11-27T00:00:00Z",
        "--end-at", "2027-01-01T00:00:00Z", "--jitter", "30s", "--data", '{"report": "daily"}',
        "--max-runs", "10", "--overlap", "skip", "--catchup-window", "10m",
        "--catchup-policy", "all", "--paused",
    )  # fmt: skip
    assert code == 0, stderr
    assert api.bodies()[0] == {
        "name": "nightly",
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "start_at": "2026-11-27T00:00:00Z",
        "end_at": "2027-01-01T00:00:00Z",
        "jitter": "30s",
        "data": {"report": "daily"},
        "max_runs": 10,
        "overlap": "skip",
        "catchup": {"window": "10m", "policy": "all", "after_pause": False},
        "paused": True,
    }
    assert "in 4 min (2026-11-27 01:00:00 UTC, 02:00 Europe/Paris)" in stdout
    assert "in 1 day (2026-11-28 01:00:00 UTC, 02:00 Europe/Paris)" in stdout


def test_create_needs_cron_or_every(api: FakeApi) -> None:
    code, _, stderr = run("schedules", "create", "shop", "echo", "nightly")
    assert code == 2 and "Give --cron or --every" in stderr and api.requests == []


def test_bad_data_is_refused_before_sending(api: FakeApi) -> None:
    code, _, stderr = run(
        "schedules", "create", "shop", "echo", "n", "--every", "1s", "--data", "[1]"
    )
    assert code == 2 and "must be a JSON object" in stderr and api.requests == []


def test_get_prints_for_a_person_or_the_apis_json(api: FakeApi) -> None:
    api.then(answer(200, schedule_json()), answer(200, schedule_json()))
    code, stdout, _ = run("schedules", "get", "shop", "echo", "nightly")
    assert code == 0 and stdout.startswith("nightly  (active; id 0196aaaa, version 1)")
    assert "next       in 4 min (2026-11-27 01:00:00 UTC, 02:00 Europe/Paris)" in stdout
    assert "last runs  2026-11-26 01:00:00 UTC  succeeded" in stdout
    code, stdout, _ = run("schedules", "get", "shop", "echo", "nightly", "--json")
    assert code == 0 and json.loads(stdout) == schedule_json()
    assert api.requests[0].url.path == f"{SCHEDULES}/nightly"


def test_list_follows_every_page_into_one_table(api: FakeApi) -> None:
    api.then(
        answer(200, {"schedules": [schedule_json("a")], "next_cursor": "YQ=="}),
        answer(200, {"schedules": [schedule_json("b", paused=True, next_fire_times=[])]}),
    )
    code, stdout, _ = run("schedules", "list", "shop", "echo")
    assert code == 0
    row_a = next(line for line in stdout.splitlines() if " a " in line)
    assert "active" in row_a and "in 4 min (2026-11-27 01:00:00 UTC, 02:00 Europe/Paris)" in row_a
    assert "paused" in next(line for line in stdout.splitlines() if " b " in line)
    assert api.requests[1].url.params["cursor"] == "YQ=="


def test_list_as_json_is_every_schedule_as_answered(api: FakeApi) -> None:
    api.then(answer(200, {"schedules": [schedule_json("a")], "next_cursor": None}))
    code, stdout, _ = run("schedules", "list", "shop", "echo", "--json")
    assert code == 0 and json.loads(stdout) == {"schedules": [schedule_json("a")]}


def test_update_keeps_the_catchup_fields_not_given(api: FakeApi) -> None:
    api.then(answer(200, schedule_json()), answer(200, schedule_json(version=2)))
    code, _, stderr = run(
        "schedules", "update", "shop", "echo", "nightly", "--every", "1h",
        "--catchup-window", "5m",
    )  # fmt: skip
    assert code == 0, stderr
    patch = api.requests[1]
    assert (patch.method, patch.url.path) == ("PATCH", f"{SCHEDULES}/nightly")
    assert api.bodies()[1] == {
        "every": "1h",
        "catchup": {"window": "5m", "policy": "latest", "after_pause": False},
    }


def test_update_with_nothing_to_change_says_so(api: FakeApi) -> None:
    code, _, stderr = run("schedules", "update", "shop", "echo", "nightly")
    assert code == 2 and "Nothing to change" in stderr and api.requests == []


def test_pause_resume_trigger_and_delete(api: FakeApi) -> None:
    triggered = {"id": "0196aaaa@2026-11-27T00:56:00Z", "fire_at": "2026-11-27T00:56:00Z"}
    api.then(
        answer(200, schedule_json(paused=True, next_fire_times=[])),
        answer(200, schedule_json()),
        answer(202, {**triggered, "status": "queued"}),
        answer(204),
    )
    assert "(paused;" in run("schedules", "pause", "shop", "echo", "nightly")[1]
    assert "(active;" in run("schedules", "resume", "shop", "echo", "nightly")[1]
    code, stdout, _ = run("schedules", "trigger", "shop", "echo", "nightly")
    assert code == 0 and json.loads(stdout)["id"] == triggered["id"]
    code, _, stderr = run("schedules", "delete", "shop", "echo", "nightly")
    assert code == 0 and "deleted schedule nightly" in stderr
    assert [(r.method, r.url.path) for r in api.requests] == [
        ("POST", f"{SCHEDULES}/nightly:pause"),
        ("POST", f"{SCHEDULES}/nightly:resume"),
        ("POST", f"{SCHEDULES}/nightly:trigger"),
        ("DELETE", f"{SCHEDULES}/nightly"),
    ]


def test_backfill_sends_its_range(api: FakeApi) -> None:
    api.then(answer(202, {"runs": 2, "task_ids": ["s@1", "s@2"]}))
    code, stdout, stderr = run(
        "schedules", "backfill", "shop", "echo", "nightly",
        "--from", "2026-11-02T00:00:00Z", "--to", "2026-11-03T23:59:59Z",
    )  # fmt: skip
    assert code == 0 and "submitted 2 runs" in stderr
    assert json.loads(stdout)["task_ids"] == ["s@1", "s@2"]
    assert api.bodies()[0] == {"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T23:59:59Z"}


def test_runs_print_a_table_with_the_filters_sent(api: FakeApi) -> None:
    runs = [{"fire_at": "2026-11-26T01:00:00Z", "task_id": "0196aaaa@x", "status": "succeeded"}]
    api.then(answer(200, {"runs": runs}), answer(200, {"runs": runs}))
    code, stdout, _ = run(
        "schedules", "runs", "shop", "echo", "nightly", "--before", "2026-11-27T00:00:00Z",
        "--limit", "5",
    )  # fmt: skip
    assert code == 0 and "2026-11-26 01:00:00" in stdout and "0196aaaa@x" in stdout
    assert dict(api.requests[0].url.params) == {"before": "2026-11-27T00:00:00Z", "limit": "5"}
    code, stdout, _ = run("schedules", "runs", "shop", "echo", "nightly", "--json")
    assert json.loads(stdout) == {"runs": runs}


def test_an_api_error_prints_its_code_and_detail(api: FakeApi) -> None:
    api.then(error(422, "invalid_request", "timezone: unknown time zone 'Mars/Olympus'"))
    code, _, stderr = run(
        "schedules", "create", "shop", "echo", "n", "--cron", "@daily", "--timezone", "Mars/Olympus"
    )
    assert code == 1 and "422 invalid_request: timezone: unknown time zone" in stderr
