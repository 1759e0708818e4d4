"""A pipeline's schedules through the SDK: the requests each method sends, answers read
as typed models, pages followed, what is retried and what is not, and the API's errors
raised with their code and detail."""

from __future__ import annotations

import datetime as dt
import inspect

import httpx
import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer, error, schedule_json, task_json

SCHEDULES = "/api/applications/shop/pipelines/echo/schedules"
PARIS = dt.timezone(dt.timedelta(hours=1))


def client(api: FakeApi, clock: Clock | None = None) -> wsched.Client:
    clock = clock or Clock()
    return wsched.Client(
        "http://api", api_key="k", transport=api.transport(), sleep=clock.sleep, clock=clock
    )


def test_create_sends_every_field_in_the_api_spelling() -> None:
    api = FakeApi().then(answer(201, schedule_json()))
    with client(api) as sdk:
        sdk.schedules("shop", "echo").create(
            "nightly",
            every=dt.timedelta(minutes=15),
            timezone="Europe/Paris",
            start_at=dt.datetime(2026, 12, 1, 9, 0, tzinfo=PARIS),
            end_at="2027-01-01T00:00:00Z",
            jitter=30,
            data={"report": "daily"},
            max_runs=10,
            overlap="skip",
            catchup=wsched.Catchup(window="10m", policy="all", after_pause=True),
            paused=True,
        )
    sent = api.requests[0]
    assert (sent.method, sent.url.path) == ("POST", SCHEDULES)
    assert api.bodies()[0] == {
        "name": "nightly",
        "every": "900s",
        "timezone": "Europe/Paris",
        "start_at": "2026-12-01T09:00:00+01:00",
        "end_at": "2027-01-01T00:00:00Z",
        "jitter": "30s",
        "data": {"report": "daily"},
        "max_runs": 10,
        "overlap": "skip",
        "catchup": {"window": "10m", "policy": "all", "after_pause": True},
        "paused": True,
    }


def test_a_minimal_create_sends_only_what_was_given() -> None:
    api = FakeApi().then(answer(201, schedule_json()))
    with client(api) as sdk:
        sdk.schedules("shop", "echo").create("nightly", cron="0 2 * * *")
    assert api.bodies()[0] == {"name": "nightly", "cron": "0 2 * * *"}


def test_a_schedule_reads_as_typed_values_keeping_the_answer() -> None:
    body = schedule_json(start_at="2026-12-01T08:00:00+00:00")
    api = FakeApi().then(answer(200, body))
    with client(api) as sdk:
        schedule = sdk.schedules("shop", "echo").get("nightly")
    assert api.requests[0].url.path == f"{SCHEDULES}/nightly"
    assert schedule.next_fire_times == (
        dt.datetime(2026, 11, 27, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 28, 1, tzinfo=dt.UTC),
    )
    assert schedule.start_at == dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
    (run,) = schedule.last_runs
    assert (run.task_id, run.status) == ("0196aaaa@2026-11-26T01:00:00Z", "succeeded")
    assert run.fire_at == dt.datetime(2026, 11, 26, 1, tzinfo=dt.UTC)
    assert schedule.counts == wsched.ScheduleCounts(fired=1, skipped=0, missed=0)
    assert schedule.raw == body and schedule.catchup["policy"] == "latest"


def test_a_naive_time_is_refused_before_sending() -> None:
    api = FakeApi()
    with client(api) as sdk, pytest.raises(ValueError, match="no time zone"):
        sdk.schedules("shop", "echo").create(
            "nightly", cron="@daily", start_at=dt.datetime(2026, 12, 1, 9, 0)
        )
    with client(api) as sdk, pytest.raises(ValueError, match="no time zone"):
        sdk.schedules("shop", "echo").runs("nightly", at=dt.datetime(2026, 12, 1, 9, 0))
    assert api.requests == []


def test_iterate_follows_the_cursor_to_the_last_page() -> None:
    api = FakeApi().then(
        answer(200, {"schedules": [schedule_json("a"), schedule_json("b")], "next_cursor": "Yg=="}),
        answer(200, {"schedules": [schedule_json("c")], "next_cursor": None}),
    )
    with client(api) as sdk:
        names = [s.name for s in sdk.schedules("shop", "echo").iterate(page_size=2)]
    assert names == ["a", "b", "c"]
    assert [dict(r.url.params) for r in api.requests] == [
        {"limit": "2"},
        {"limit": "2", "cursor": "Yg=="},
    ]


def test_update_patches_the_fields_given_only() -> None:
    api = FakeApi().then(answer(200, schedule_json(every="1h", cron=None, version=2)))
    with client(api) as sdk:
        updated = sdk.schedules("shop", "echo").update("nightly", every="1h", data={"n": 2})
    sent = api.requests[0]
    assert (sent.method, sent.url.path) == ("PATCH", f"{SCHEDULES}/nightly")
    assert api.bodies()[0] == {"every": "1h", "data": {"n": 2}}
    assert (updated.every, updated.version) == ("1h", 2)


def test_pause_and_resume_are_actions_retried_after_a_503() -> None:
    api = FakeApi().then(
        error(503, "broker_unavailable", "retry", "1"),
        answer(200, schedule_json(paused=True, next_fire_times=[])),
        answer(200, schedule_json()),
    )
    clock = Clock()
    with client(api, clock) as sdk:
        schedules = sdk.schedules("shop", "echo")
        assert schedules.pause("nightly").next_fire_times == ()
        assert not schedules.resume("nightly").paused
    assert [(r.method, r.url.path) for r in api.requests] == [
        ("POST", f"{SCHEDULES}/nightly:pause"),
        ("POST", f"{SCHEDULES}/nightly:pause"),
        ("POST", f"{SCHEDULES}/nightly:resume"),
    ]
    assert clock.slept == [1.0]


def test_trigger_answers_a_handle_on_the_run_that_waits_for_its_result() -> None:
    run_id = "0196aaaa@2026-11-26T12:00:00.123000Z"
    api = FakeApi().then(
        answer(202, {"id": run_id, "fire_at": "2026-11-26T12:00:00.123000Z", "status": "queued"}),
        error(404, "not_found", "not admitted yet"),
        answer(200, task_json(run_id, "succeeded", result="done", result_encoding="text")),
    )
    with client(api) as sdk:
        run = sdk.schedules("shop", "echo").trigger("nightly")
        assert (run.id, run.status) == (run_id, "queued")
        assert run.fire_at == dt.datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=dt.UTC)
        assert run.result(timeout=10) == "done"
    assert api.requests[0].url.path == f"{SCHEDULES}/nightly:trigger"
    assert float(api.requests[2].url.params["wait"]) <= 10  # a long poll
    assert api.requests[2].url.raw_path.partition(b"?")[0] == (
        b"/api/applications/shop/pipelines/echo/tasks/0196aaaa%402026-11-26T12%3A00%3A00.123000Z"
    )


def test_a_trigger_is_not_sent_twice_after_a_503() -> None:
    """A second trigger would be a second run: the 503 is the caller's to judge."""
    api = FakeApi().then(error(503, "broker_unavailable", "Kafka is down", "1"))
    with client(api) as sdk, pytest.raises(wsched.Unavailable):
        sdk.schedules("shop", "echo").trigger("nightly")
    assert len(api.requests) == 1


def test_backfill_sends_its_range_and_counts_the_runs() -> None:
    ids = ["0196aaaa@2026-11-02T01:00:00Z", "0196aaaa@2026-11-03T01:00:00Z"]
    api = FakeApi().then(answer(202, {"runs": 2, "task_ids": ids}))
    with client(api) as sdk:
        done = sdk.schedules("shop", "echo").backfill(
            "nightly", start=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), end="2026-11-03T23:59:59Z"
        )
    assert api.requests[0].url.path == f"{SCHEDULES}/nightly:backfill"
    assert api.bodies()[0] == {"from": "2026-11-02T00:00:00+00:00", "to": "2026-11-03T23:59:59Z"}
    assert (done.runs, done.task_ids) == (2, tuple(ids))


def test_runs_are_read_latest_first_with_the_filters_given() -> None:
    runs = [
        {"fire_at": "2026-11-26T02:00:00Z", "task_id": "s@2", "status": "queued"},
        {"fire_at": "2026-11-26T01:00:00Z", "task_id": "s@1", "status": "succeeded"},
    ]
    api = FakeApi().then(answer(200, {"runs": runs}), answer(200, {"runs": runs[1:]}))
    with client(api) as sdk:
        schedules = sdk.schedules("shop", "echo")
        latest = schedules.runs("nightly", before="2026-11-27T00:00:00Z", limit=2)
        (one,) = schedules.runs("nightly", at=dt.datetime(2026, 11, 26, 1, tzinfo=dt.UTC))
    assert [r.task_id for r in latest] == ["s@2", "s@1"] and one.status == "succeeded"
    assert api.requests[0].url.path == f"{SCHEDULES}/nightly/runs"
    assert dict(api.requests[0].url.params) == {"before": "2026-11-27T00:00:00Z", "limit": "2"}
    assert dict(api.requests[1].url.params) == {"at": "2026-11-26T01:00:00+00:00"}


def test_delete_answers_nothing() -> None:
    api = FakeApi().then(answer(204))
    with client(api) as sdk:
        assert sdk.schedules("shop", "echo").delete("nightly") is None  # type: ignore[func-returns-value]
    assert (api.requests[0].method, api.requests[0].url.path) == ("DELETE", f"{SCHEDULES}/nightly")


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "not_found", wsched.NotFound),
        (409, "name_taken", wsched.Conflict),
        (422, "invalid_request", wsched.InvalidRequest),
        (409, "pipeline_not_ready", wsched.Conflict),
    ],
)
def test_api_errors_are_raised_with_their_code_and_detail(
    status: int, code: str, kind: type[wsched.ApiError]
) -> None:
    api = FakeApi().then(error(status, code, "cron: bad field 'x'"))
    with client(api) as sdk, pytest.raises(kind) as raised:
        sdk.schedules("shop", "echo").create("nightly", cron="x")
    assert (raised.value.status, raised.value.error) == (status, code)
    assert raised.value.detail == "cron: bad field 'x'"


def test_names_are_escaped_as_one_path_segment() -> None:
    api = FakeApi().then(error(404, "not_found", "no schedule"))
    with client(api) as sdk, pytest.raises(wsched.NotFound):
        sdk.schedules("shop", "echo").get("a/b")
    assert api.requests[0].url.raw_path == f"{SCHEDULES}/a%2Fb".encode()


# -- the asyncio client sends the same calls --------------------------------------------


def async_client(api: FakeApi, clock: Clock) -> wsched.AsyncClient:
    return wsched.AsyncClient(
        "http://api",
        api_key="k",
        transport=httpx.MockTransport(api.handle),
        sleep=clock.async_sleep,
        clock=clock,
    )


async def test_the_async_client_creates_iterates_and_triggers_alike() -> None:
    run_id = "0196aaaa@2026-11-26T12:00:00Z"
    api = FakeApi().then(
        answer(201, schedule_json()),
        answer(200, {"schedules": [schedule_json("a")], "next_cursor": "Yg=="}),
        answer(200, {"schedules": [schedule_json("b")], "next_cursor": None}),
        answer(202, {"id": run_id, "fire_at": "2026-11-26T12:00:00Z", "status": "queued"}),
        answer(200, task_json(run_id, "succeeded", result=7)),
        answer(204),
    )
    async with async_client(api, Clock()) as sdk:
        schedules = sdk.schedules("shop", "echo")
        created = await schedules.create("nightly", every="10s", data={"n": 1})
        names = [s.name async for s in schedules.iterate()]
        run = await schedules.trigger("nightly")
        assert await run.result(timeout=5) == 7
        await schedules.delete("nightly")
    assert created.name == "nightly" and names == ["a", "b"]
    assert api.bodies()[0] == {"name": "nightly", "every": "10s", "data": {"n": 1}}
    assert isinstance(run, wsched.AsyncScheduleRunHandle) and run.fire_at.tzinfo is not None


def test_both_clients_offer_the_same_schedule_methods_with_the_same_parameters() -> None:
    """The async sub-client mirrors the blocking one: a method added to one only fails."""

    def methods(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        }

    assert methods(wsched.Schedules) == methods(wsched.AsyncSchedules)
