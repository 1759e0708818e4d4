"""Submitting one task and many: ids fixed on the client, options in the API's spelling,
batches cut to the bounds, retried with the same ids."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import httpx
import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer, batch_answer, error, task_json

PIPE = "/api/applications/shop/pipelines/echo"


def client(api: FakeApi, clock: Clock | None = None, **options: object) -> wsched.Client:
    clock = clock or Clock()
    return wsched.Client(
        "http://api",
        api_key="k",
        transport=api.transport(),
        sleep=clock.sleep,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def test_submit_picks_a_uuid7_id_and_sends_the_data_compactly() -> None:
    api = FakeApi().then(lambda r: answer(202, {"id": r.url.params["id"], "status": "queued"}))
    with client(api) as sdk:
        handle = sdk.tasks("shop", "echo").submit({"message": "hé", "n": [1, 2]})
    sent = api.requests[0]
    assert (sent.method, sent.url.path) == ("POST", PIPE)
    assert sent.content == '{"message":"hé","n":[1,2]}'.encode()
    assert sent.headers["Content-Type"] == "application/json"
    assert uuid.UUID(handle.id).version == 7 and sent.url.params["id"] == handle.id
    assert (handle.status, handle.existing) == ("queued", None)


def test_a_submit_retried_after_a_503_keeps_its_id() -> None:
    api = FakeApi().then(error(503, "broker_unavailable", "retry", "1"))
    api.then(lambda r: answer(202, {"id": r.url.params["id"], "status": "queued"}))
    with client(api) as sdk:
        handle = sdk.tasks("shop", "echo").submit({"n": 1})
    first, second = api.requests
    assert first.url.params["id"] == second.url.params["id"] == handle.id
    assert first.content == second.content


def test_submit_options_are_spelled_as_the_api_reads_them() -> None:
    api = FakeApi().then(answer(202, {"id": "a", "status": "scheduled"}))
    at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    with client(api) as sdk:
        sdk.tasks("shop", "echo").submit(
            {},
            id="a",
            run_at=at,
            expires_after=dt.timedelta(minutes=10),
            retry=wsched.TaskRetry(max_attempts=5),
        )
    assert dict(api.requests[0].url.params) == {
        "id": "a",
        "run_at": "2026-12-01T09:00:00+00:00",
        "expires_after": "600s",
        "max_attempts": "5",
    }


def test_a_naive_time_is_refused_before_sending() -> None:
    api = FakeApi()
    with client(api) as sdk, pytest.raises(ValueError, match="no time zone"):
        sdk.tasks("shop", "echo").submit({}, run_at=dt.datetime(2026, 12, 1, 9, 0))
    assert api.requests == []


def test_a_task_with_its_own_backoff_goes_as_a_batch_of_one() -> None:
    """Only batch items carry a backoff; the handle reads the same."""
    api = FakeApi().then(batch_answer)
    backoff = wsched.Backoff(initial=dt.timedelta(seconds=2), max="1m")
    with client(api) as sdk:
        handle = sdk.tasks("shop", "echo").submit(
            {"n": 1}, delay=1.5, retry=wsched.TaskRetry(max_attempts=2, backoff=backoff)
        )
    assert api.requests[0].url.path == f"{PIPE}/tasks"
    (item,) = api.bodies()[0]["tasks"]
    assert item == {
        "id": handle.id,
        "data": {"n": 1},
        "delay": "1500ms",
        "retry": {
            "max_attempts": 2,
            "backoff": {"initial": "2s", "multiplier": 2.0, "max": "1m", "jitter": 0.1},
        },
    }


def test_a_resubmit_of_a_stored_task_answers_it() -> None:
    api = FakeApi().then(answer(200, task_json("a", "succeeded", result={"ok": True})))
    with client(api) as sdk:
        handle = sdk.tasks("shop", "echo").submit({"n": 1}, id="a")
    assert handle.status == "succeeded"
    assert handle.existing is not None and handle.existing.result == {"ok": True}


def test_a_reused_id_with_other_data_is_a_conflict() -> None:
    api = FakeApi().then(error(409, "task_conflict", "task 'a' already exists"))
    with client(api) as sdk, pytest.raises(wsched.Conflict) as raised:
        sdk.tasks("shop", "echo").submit({"n": 2}, id="a")
    assert raised.value.error == "task_conflict"


def test_submit_many_cuts_batches_by_items_and_by_bytes() -> None:
    api = FakeApi().then(*[batch_answer] * 10)
    items = [{"n": i} for i in range(7)] + [{"pad": "x" * 300}]
    with client(api, batch_items=3, batch_bytes=400) as sdk:
        outcome = sdk.tasks("shop", "echo").submit_many(items)
    sizes = [len(body["tasks"]) for body in api.bodies()]
    assert sizes == [3, 3, 1, 1]  # the padded item does not fit beside the 7th
    assert outcome.queued == 8 and len(outcome.ids) == len(set(outcome.ids)) == 8
    sent = [item["data"] for body in api.bodies() for item in body["tasks"]]
    assert sent == items


def test_submit_many_retries_a_chunk_with_the_same_ids_and_bytes() -> None:
    api = FakeApi().then(batch_answer, error(503, "broker_unavailable", "retry", "4"))
    api.then(batch_answer)
    clock = Clock()
    with client(api, clock, batch_items=2) as sdk:
        outcome = sdk.tasks("shop", "echo").submit_many([{"n": i} for i in range(4)])
    assert clock.slept == [4.0]
    _, failed, again = api.requests
    assert failed.content == again.content
    assert outcome.ids == tuple(
        item["id"] for body in (api.bodies()[0], api.bodies()[2]) for item in body["tasks"]
    )


def test_submit_many_gives_up_after_the_bound_and_says_why() -> None:
    api = FakeApi().then(*[error(503, "broker_unavailable", "retry", "1")] * 2)
    retry = wsched.RequestRetry(attempts=2)
    with client(api, retry=retry) as sdk, pytest.raises(wsched.Unavailable):
        sdk.tasks("shop", "echo").submit_many([{"n": 1}])
    assert len(api.requests) == 2


def test_submit_many_takes_specs_and_common_options() -> None:
    api = FakeApi().then(batch_answer)
    spec = wsched.TaskSpec(data={"n": 2}, id="own", expires_at="2026-12-01T00:00:00Z")
    with client(api) as sdk:
        outcome = sdk.tasks("shop", "echo").submit_many([{"n": 1}, spec], delay="30s")
    plain, own = api.bodies()[0]["tasks"]
    assert plain["delay"] == "30s" and "expires_at" not in plain
    assert own == {"id": "own", "data": {"n": 2}, "expires_at": "2026-12-01T00:00:00Z"}
    assert outcome.ids[1] == "own"


def test_submit_many_reports_conflicts_and_existing_items() -> None:
    results = [
        {"id": "a", "result": "existing", "status": "succeeded"},
        {"id": "b", "result": "conflict", "status": None, "detail": "taken"},
    ]
    api = FakeApi().then(
        answer(202, {"results": results, "queued": 0, "existing": 1, "conflicts": 1})
    )
    specs = [wsched.TaskSpec(data={}, id="a"), wsched.TaskSpec(data={}, id="b")]
    with client(api) as sdk:
        outcome = sdk.tasks("shop", "echo").submit_many(specs)
    assert (outcome.queued, outcome.existing, outcome.conflicts) == (0, 1, 1)
    assert outcome.results[1].detail == "taken"


def test_get_with_attempts_and_listing_pages() -> None:
    attempt = {
        "attempt": 1,
        "worker": "w1",
        "started_at": "2026-11-26T12:00:01Z",
        "ended_at": "2026-11-26T12:00:02Z",
        "outcome": "failed",
        "error": "boom",
    }
    page1 = {"tasks": [task_json("a", "dead")], "next_cursor": "YQ"}
    page2 = {"tasks": [task_json("b", "dead")], "next_cursor": None}
    api = FakeApi().then(answer(200, task_json("a", "dead", attempts=[attempt])))
    api.then(answer(200, page1), answer(200, page2))
    with client(api) as sdk:
        tasks = sdk.tasks("shop", "echo")
        task = tasks.get("a", attempts=True)
        listed = [t.id for t in tasks.iterate(status="dead", page_size=1)]
    assert task.attempts is not None and task.attempts[0].error == "boom"
    assert task.attempts[0].ended_at == dt.datetime(2026, 11, 26, 12, 0, 2, tzinfo=dt.UTC)
    assert api.requests[0].url.params["attempts"] == "true"
    assert listed == ["a", "b"]
    assert dict(api.requests[2].url.params) == {"status": "dead", "limit": "1", "cursor": "YQ"}


def test_listing_by_creation_time_sends_rfc3339_with_the_offset() -> None:
    page = {"tasks": [task_json("a", "queued")], "next_cursor": None}
    api = FakeApi().then(answer(200, page))
    since = dt.datetime(2026, 11, 26, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    with client(api) as sdk:
        listed = sdk.tasks("shop", "echo").iterate(
            created_after=since, created_before="2026-11-27T00:00:00Z"
        )
        assert [t.id for t in listed] == ["a"]
        with pytest.raises(ValueError, match="no time zone"):
            sdk.tasks("shop", "echo").list(created_after=dt.datetime(2026, 11, 26))
    assert dict(api.requests[0].url.params) == {
        "created_after": "2026-11-26T13:00:00+01:00",
        "created_before": "2026-11-27T00:00:00Z",
    }


def test_bulk_requeue_and_cancel_send_ids_in_runs_of_a_thousand() -> None:
    def bulk(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content).get("ids", [])
        results = [{"id": i, "result": "cancelling", "status": "queued"} for i in ids]
        return answer(202, {"results": results, "acted": len(results)})

    api = FakeApi().then(bulk, bulk, bulk)
    ids = [f"t{i}" for i in range(1500)]
    with client(api) as sdk:
        tasks = sdk.tasks("shop", "echo")
        cancelled = tasks.cancel_many(ids=ids)
        requeued = tasks.requeue_many(limit=10)
    assert cancelled.acted == 1500 and [r.id for r in cancelled.results] == ids
    assert [r.url.path for r in api.requests] == [f"{PIPE}/tasks:cancel"] * 2 + [
        f"{PIPE}/tasks:requeue"
    ]
    assert api.bodies()[2] == {"limit": 10} and requeued.acted == 0


def test_submit_many_sends_nothing_when_an_item_is_not_json() -> None:
    api = FakeApi()
    with client(api, batch_items=1) as sdk, pytest.raises(ValueError):
        sdk.tasks("shop", "echo").submit_many([{"n": 1}, {"n": float("nan")}])
    assert api.requests == []
