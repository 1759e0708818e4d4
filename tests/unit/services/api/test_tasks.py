"""Task routes over SQLite and an in-memory producer: submit, idempotency, reads, cancel,
requeue, and the answers when the pipeline or the broker is not there."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time

import pytest
import sqlalchemy as sa

from services.store.schema import pipeline_stats, pipelines, task_attempts, tasks
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, insert_task

SUBMIT = "/api/applications/a/pipelines/p"
TASKS = f"{SUBMIT}/tasks"


async def test_single_submit_carries_the_raw_body_keyed_by_a_fresh_id(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    raw = b'{ "b": 2,   "a": [1, 2.50, "\\u00e9"] }'
    answer = await api.client.post(SUBMIT, content=raw, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    [event] = fakes.producer.task_events(pipeline["id"])
    assert event.task_id == answer.json()["id"]
    assert event.submit.data == raw
    assert event.submit.data_sha256 == hashlib.sha256(raw).digest()
    assert event.schema_version == 1
    [record] = [r for r in fakes.producer.records if r.topic == pipeline["topic"]]
    assert record.key == event.task_id.encode()


async def test_generated_ids_are_time_ordered_uuids(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    ids = []
    for _ in range(5):
        answer = await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))
        ids.append(answer.json()["id"])
    assert ids == sorted(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"a": ', 400, "malformed_json"),
        (b'{"a": NaN}', 400, "malformed_json"),
        (b"\xff\xfe{}", 400, "malformed_json"),
        (b"[1, 2]", 422, "invalid_request"),
        (b'"text"', 422, "invalid_request"),
        (b"", 400, "malformed_json"),
    ],
)
async def test_single_submit_needs_one_json_object(
    api: Api, fakes: Fakes, body: bytes, status: int, error: str
) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(SUBMIT, content=body, headers=bearer(key))
    assert_error(answer, status, error)
    assert fakes.producer.task_events(pipeline["id"]) == []


async def test_a_client_id_is_used_and_validated(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(f"{SUBMIT}?id=order-42", json={"n": 1}, headers=bearer(key))
    assert answer.json() == {"id": "order-42", "status": "queued"}
    header = {**bearer(key), "Idempotency-Key": "order-43"}
    answer = await api.client.post(SUBMIT, json={"n": 1}, headers=header)
    assert answer.json()["id"] == "order-43"
    bad = await api.client.post(f"{SUBMIT}?id=a/b", json={"n": 1}, headers=bearer(key))
    assert "task id" in assert_error(bad, 422, "invalid_request")
    assert [e.task_id for e in fakes.producer.task_events(pipeline["id"])] == [
        "order-42",
        "order-43",
    ]


async def test_a_task_id_ending_in_a_newline_is_refused_everywhere(api: Api, fakes: Fakes) -> None:
    """Python's ``$`` also matches before a final newline: the ids' rule must not."""
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(SUBMIT, params={"id": "t1\n"}, json={}, headers=bearer(key))
    assert "task id" in assert_error(answer, 422, "invalid_request")
    batch = {"tasks": [{"data": {}, "id": "t1\n"}]}
    answer = await api.client.post(TASKS, json=batch, headers=bearer(key))
    assert "task id" in assert_error(answer, 422, "invalid_request")
    answer = await api.client.delete(f"{TASKS}/t1%0A", headers=bearer(key))
    assert "task id" in assert_error(answer, 422, "invalid_request")
    cursor = base64.urlsafe_b64encode(b"t1\n").decode().rstrip("=")
    answer = await api.client.get(TASKS, params={"cursor": cursor}, headers=bearer(key))
    assert_error(answer, 400, "invalid_cursor")
    assert fakes.producer.task_events(pipeline["id"]) == []


async def test_resubmitting_a_stored_task_answers_it_or_409_on_other_data(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    raw = b'{"n": 1}'
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="t1", data=raw)
    same = await api.client.post(f"{SUBMIT}?id=t1", content=raw, headers=bearer(key))
    assert same.status_code == 200, same.text
    assert same.json()["id"] == "t1"
    assert same.json()["status"] == "queued"
    assert same.json()["data"] == {"n": 1}
    other = await api.client.post(f"{SUBMIT}?id=t1", content=b'{"n": 2}', headers=bearer(key))
    assert "different data" in assert_error(other, 409, "task_conflict")
    assert fakes.producer.task_events(pipeline["id"]) == []


async def test_a_batch_answers_one_result_per_item(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    stored = json.dumps({"n": 0}, separators=(",", ":")).encode()
    insert_task(
        api.database_url, pipeline_id=pipeline["id"], task_id="s0", data=stored, status="leased"
    )
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="s1", data=b'{"n":1}')
    items = [
        {"data": {"n": 0}, "id": "s0"},  # stored, same data
        {"data": {"n": 9}, "id": "s1"},  # stored, other data
        {"data": {"n": 2}, "id": "new"},
        {"data": {"n": 2}, "id": "new"},  # a repeat: collapses onto the item before
        {"data": {"n": 3}, "id": "new"},  # a repeat with other data
        {"data": {"é": [1.5, None, True]}},
    ]
    answer = await api.client.post(TASKS, json={"tasks": items}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    results = [(r["id"], r["result"], r["status"]) for r in body["results"]]
    assert results[:5] == [
        ("s0", "existing", "leased"),
        ("s1", "conflict", "queued"),
        ("new", "queued", "queued"),
        ("new", "queued", "queued"),
        ("new", "conflict", None),
    ]
    assert results[5][1:] == ("queued", "queued")
    assert (body["queued"], body["existing"], body["conflicts"]) == (3, 1, 2)
    events = fakes.producer.task_events(pipeline["id"])
    assert [e.task_id for e in events] == ["new", results[5][0]]
    # Batch items are re-serialised compactly (UTF-8, no spaces).
    assert events[0].submit.data == b'{"n":2}'
    assert events[1].submit.data == '{"é":[1.5,null,true]}'.encode()


async def test_submits_to_unknown_pipelines_are_404(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    answer = await api.client.post(
        "/api/applications/a/pipelines/nope", json={}, headers=bearer(key)
    )
    assert "no pipeline named 'nope'" in assert_error(answer, 404, "not_found")
    answer = await api.client.post("/api/applications/zz/pipelines/p", json={}, headers=bearer(key))
    assert "no application named 'zz'" in assert_error(answer, 404, "not_found")


async def test_submits_to_a_pipeline_that_is_not_ready_are_409_with_state_and_reason(
    api: Api, fakes: Fakes
) -> None:
    key = await api.tenant("acme")
    await api.application(key, "a")
    fakes.admin.fail = "broker said no"
    failed = await api.pipeline(key, "a", "p", topic="dedicated")  # its topic is refused
    assert failed["state"] == "failed"
    for path, body in ((SUBMIT, {"n": 1}), (TASKS, {"tasks": [{"data": {}}]})):
        answer = await api.client.post(path, json=body, headers=bearer(key))
        detail = assert_error(answer, 409, "pipeline_not_ready")
        assert "failed" in detail
        assert "broker said no" in detail
    with sa.create_engine(api.database_url).begin() as conn:
        conn.execute(pipelines.update().values(state="provisioning", state_reason=""))
    answer = await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))
    assert "provisioning" in assert_error(answer, 409, "pipeline_not_ready")
    assert fakes.producer.task_events(failed["id"]) == []


async def test_a_broker_that_does_not_ack_is_503_with_retry_after(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    fakes.producer.fail = "no ack within 5 s"
    for path, body in ((SUBMIT, {"n": 1}), (TASKS, {"tasks": [{"data": {}}]})):
        answer = await api.client.post(path, json=body, headers=bearer(key))
        assert "no ack within 5 s" in assert_error(answer, 503, "broker_unavailable")
        assert answer.headers["retry-after"] == str(api.ctx.limits.retry_after_s)
    metrics = (await api.client.get("/metrics")).text
    assert "wsched_api_broker_unavailable_total 2.0" in metrics
    assert f'wsched_tasks_created_total{{pipeline="{pipeline["id"]}"}}' not in metrics


async def test_created_tasks_are_counted_by_pipeline(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))
    await api.client.post(TASKS, json={"tasks": [{"data": {}}, {"data": {}}]}, headers=bearer(key))
    metrics = (await api.client.get("/metrics")).text
    assert f'wsched_tasks_created_total{{pipeline="{pipeline["id"]}"}} 3.0' in metrics
    assert 'route="/api/applications/{app}/pipelines/{pipeline}/tasks",status="202"' in metrics


async def test_a_task_reads_with_its_result(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    pid = pipeline["id"]
    insert_task(
        api.database_url,
        pipeline_id=pid,
        task_id="j",
        data=b'{"a":1}',
        status="succeeded",
        result=b'{"ok": true}',
    )
    insert_task(
        api.database_url,
        pipeline_id=pid,
        task_id="t",
        data=b"{}",
        status="failed",
        result=b"plain words",
    )
    insert_task(
        api.database_url,
        pipeline_id=pid,
        task_id="b",
        data=b"{}",
        status="succeeded",
        result=b"\xff\x00",
    )
    insert_task(api.database_url, pipeline_id=pid, task_id="q", data=b"{}")
    got = {}
    for task_id in ("j", "t", "b", "q"):
        answer = await api.client.get(f"{TASKS}/{task_id}", headers=bearer(key))
        assert answer.status_code == 200, answer.text
        got[task_id] = answer.json()
    assert (got["j"]["result"], got["j"]["result_encoding"], got["j"]["data"]) == (
        {"ok": True},
        "json",
        {"a": 1},
    )
    assert (got["t"]["result"], got["t"]["result_encoding"], got["t"]["error"]) == (
        "plain words",
        "text",
        "boom",
    )
    assert (got["b"]["result"], got["b"]["result_encoding"]) == ("/wA=", "base64")
    assert (got["q"]["result"], got["q"]["status"], got["q"]["attempt"]) == (None, "queued", 1)
    missing = await api.client.get(f"{TASKS}/nope", headers=bearer(key))
    assert "admitted" in assert_error(missing, 404, "not_found")


async def test_tasks_list_in_pages_with_a_status_filter(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    for n in range(7):
        status = "dead" if n % 3 == 0 else "queued"
        insert_task(
            api.database_url, pipeline_id=pipeline["id"], task_id=f"t{n}", data=b"{}", status=status
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get(TASKS, params=params, headers=bearer(key))).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"t{n}" for n in range(7)]
    dead = await api.client.get(TASKS, params={"status": "dead"}, headers=bearer(key))
    assert [t["id"] for t in dead.json()["tasks"]] == ["t0", "t3", "t6"]
    bad = await api.client.get(TASKS, params={"status": "zombie"}, headers=bearer(key))
    assert "status" in assert_error(bad, 422, "invalid_request")
    bad = await api.client.get(TASKS, params={"cursor": "%%%"}, headers=bearer(key))
    assert_error(bad, 400, "invalid_cursor")
    bad = await api.client.get(TASKS, params={"limit": "0"}, headers=bearer(key))
    assert "limit" in assert_error(bad, 422, "invalid_request")


async def test_tasks_filtered_by_creation_time_in_pages(api: Api) -> None:
    """``created_after`` (inclusive) and ``created_before`` (exclusive), with offsets, and
    with the status filter and the cursor; a bad time is a 422 naming its parameter."""
    key, pipeline = await api.ready_pipeline()
    start = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
    for hour in range(6):
        insert_task(
            api.database_url,
            pipeline_id=pipeline["id"],
            task_id=f"h{hour}",
            data=b"{}",
            status="dead" if hour % 2 else "queued",
            created_at=start + dt.timedelta(hours=hour),
        )

    async def listed(**params: str) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            page = await api.client.get(
                TASKS,
                params={"limit": "1", **params, **({"cursor": cursor} if cursor else {})},
                headers=bearer(key),
            )
            assert page.status_code == 200, page.text
            seen += [t["id"] for t in page.json()["tasks"]]
            if (cursor := page.json()["next_cursor"]) is None:
                return seen

    # 13:00Z written as 14:00 at +01:00: offsets are honoured
    assert await listed(created_after="2026-11-20T14:00:00+01:00") == ["h1", "h2", "h3", "h4", "h5"]
    assert await listed(created_before="2026-11-20T14:00:00Z") == ["h0", "h1"]
    assert await listed(
        created_after="2026-11-20T13:00:00Z", created_before="2026-11-20T16:30:00Z", status="dead"
    ) == ["h1", "h3"]
    for params, named in (
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-11-20T14:00:00"}, "created_before"),  # no offset
        (
            {"created_after": "2026-11-20T15:00:00Z", "created_before": "2026-11-20T15:00:00Z"},
            "created_before",
        ),
    ):
        bad = await api.client.get(TASKS, params=params, headers=bearer(key))
        assert named in assert_error(bad, 422, "invalid_request")


async def test_stats_and_pipeline_counts_come_from_the_grains_counters(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    empty = (await api.client.get(f"{SUBMIT}/stats", headers=bearer(key))).json()
    assert empty["backlog"] == 0
    assert empty["counts"]["queued"] == 0
    assert empty["updated_at"] is None
    counts = {
        "queued": 5,
        "leased": 2,
        "succeeded": 9,
        "failed": 0,
        "dead": 1,
        "cancelled": 0,
        "backlog": 5,
    }
    with sa.create_engine(api.database_url).begin() as conn:
        conn.execute(
            pipeline_stats.insert().values(
                pipeline_id=pipeline["id"], counts_json=json.dumps(counts), updated_at=sa.func.now()
            )
        )
    stats = (await api.client.get(f"{SUBMIT}/stats", headers=bearer(key))).json()
    assert stats["backlog"] == 5
    # Counters written before a status existed read as 0 for it.
    read = stats["counts"]
    assert read == {k: v for k, v in counts.items() if k != "backlog"} | {
        "scheduled": 0,
        "expired": 0,
    }
    assert stats["updated_at"] is not None
    shown = (await api.client.get(SUBMIT, headers=bearer(key))).json()
    assert shown["counts"]["succeeded"] == 9


async def test_cancel_produces_a_cancel_event_unless_the_task_finished(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    insert_task(
        api.database_url, pipeline_id=pipeline["id"], task_id="done", data=b"{}", status="succeeded"
    )
    insert_task(
        api.database_url, pipeline_id=pipeline["id"], task_id="busy", data=b"{}", status="leased"
    )
    finished = await api.client.delete(f"{TASKS}/done", headers=bearer(key))
    assert "succeeded" in assert_error(finished, 409, "task_finished")
    for task_id in ("busy", "not-admitted-yet"):
        answer = await api.client.delete(f"{TASKS}/{task_id}", headers=bearer(key))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"id": task_id, "status": "cancelling"}
    events = fakes.producer.task_events(pipeline["id"])
    assert [(e.task_id, e.WhichOneof("kind")) for e in events] == [
        ("busy", "cancel"),
        ("not-admitted-yet", "cancel"),
    ]


async def test_requeue_only_for_dead_tasks(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    insert_task(
        api.database_url, pipeline_id=pipeline["id"], task_id="d", data=b"{}", status="dead"
    )
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="q", data=b"{}")
    answer = await api.client.post(f"{TASKS}/d/requeue", headers=bearer(key))
    assert answer.status_code == 202, answer.text
    queued = await api.client.post(f"{TASKS}/q/requeue", headers=bearer(key))
    assert "only dead tasks" in assert_error(queued, 409, "task_not_dead")
    missing = await api.client.post(f"{TASKS}/zz/requeue", headers=bearer(key))
    assert_error(missing, 404, "not_found")
    events = fakes.producer.task_events(pipeline["id"])
    assert [(e.task_id, e.WhichOneof("kind")) for e in events] == [("d", "requeue")]


async def test_a_result_nested_too_deep_for_json_reads_as_text(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    deep = "[" * 100_000 + "]" * 100_000
    insert_task(
        api.database_url,
        pipeline_id=pipeline["id"],
        task_id="d",
        data=b"{}",
        status="succeeded",
        result=deep.encode(),
    )
    answer = await api.client.get(f"{TASKS}/d", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["result"], answer.json()["result_encoding"]) == (deep, "text")


# -- delayed tasks -------------------------------------------------------------------------


async def test_a_delay_or_run_at_makes_the_task_scheduled(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    before_ms = int(time.time() * 1000)
    answer = await api.client.post(f"{SUBMIT}?delay=90s", json={"a": 1}, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "scheduled"
    later = await api.client.post(
        f"{SUBMIT}?run_at=2099-01-01T01:00:00%2B01:00", json={"a": 2}, headers=bearer(key)
    )
    assert later.status_code == 422  # beyond the one-year horizon
    assert "run_at" in later.json()["detail"]
    past = await api.client.post(
        f"{SUBMIT}?run_at=2020-01-01T00:00:00Z", json={"a": 3}, headers=bearer(key)
    )
    assert past.json()["status"] == "queued"  # a time in the past runs now
    events = fakes.producer.task_events(pipeline["id"])
    assert [e.task_id for e in events] == [answer.json()["id"], past.json()["id"]]
    due = events[0].submit.due_at_ms
    assert before_ms + 90_000 <= due <= int(time.time() * 1000) + 90_000
    assert events[1].submit.due_at_ms == 0


async def test_batch_items_carry_their_own_due_times(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    items = [
        {"data": {"n": 1}, "delay": "PT10M"},
        {"data": {"n": 2}},
        {"data": {"n": 3}, "run_at": "2099-01-01T00:00:00Z"},
    ]
    refused = await api.client.post(TASKS, json={"tasks": items}, headers=bearer(key))
    assert refused.status_code == 422
    assert "tasks[2].run_at" in refused.json()["detail"]
    assert fakes.producer.task_events(pipeline["id"]) == []  # nothing of the batch went out
    answer = await api.client.post(TASKS, json={"tasks": items[:2]}, headers=bearer(key))
    assert [r["status"] for r in answer.json()["results"]] == ["scheduled", "queued"]
    first, second = fakes.producer.task_events(pipeline["id"])
    assert first.submit.due_at_ms > int(time.time() * 1000) + 590_000
    assert second.submit.due_at_ms == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("delay=-5s", "delay"),
        ("delay=soon", "delay"),
        ("delay=5s&run_at=2030-01-01T00:00:00Z", "run_at"),
        ("run_at=2030-01-01T00:00:00", "run_at"),
        ("delay=367d", "delay"),
    ],
)
async def test_bad_times_are_422_naming_the_field_and_nothing_is_produced(
    api: Api, fakes: Fakes, query: str, field: str
) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(f"{SUBMIT}?{query}", json={"a": 1}, headers=bearer(key))
    detail = assert_error(answer, 422, "invalid_request")
    assert detail.startswith(f"{field}:"), detail
    assert fakes.producer.task_events(pipeline["id"]) == []


async def test_attempts_lists_each_failed_attempt_then_the_latest(api: Api) -> None:
    key, pipeline = await api.ready_pipeline()
    insert_task(
        api.database_url, pipeline_id=pipeline["id"], task_id="r", data=b"{}", status="dead"
    )
    t0 = dt.datetime(2026, 11, 26, 12, 0)
    engine = sa.create_engine(api.database_url)
    with engine.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.id == "r").values(attempt=3, worker="w3"))
        for n, outcome in ((1, "failed"), (2, "lease_lost")):
            conn.execute(
                task_attempts.insert().values(
                    pipeline_id=pipeline["id"],
                    task_id="r",
                    attempt=n,
                    worker=f"w{n}",
                    started_at=t0,
                    ended_at=t0 + dt.timedelta(seconds=n),
                    outcome=outcome,
                    error=f"error {n}",
                    expire_at=t0 + dt.timedelta(days=7),
                )
            )
    engine.dispose()
    plain = (await api.client.get(f"{TASKS}/r", headers=bearer(key))).json()
    assert plain["attempts"] is None  # only when asked for
    shown = (await api.client.get(f"{TASKS}/r?attempts=true", headers=bearer(key))).json()
    assert [(a["attempt"], a["worker"], a["outcome"], a["error"]) for a in shown["attempts"]] == [
        (1, "w1", "failed", "error 1"),
        (2, "w2", "lease_lost", "error 2"),
        (3, "w3", "dead", "boom"),
    ]
    insert_task(api.database_url, pipeline_id=pipeline["id"], task_id="new", data=b"{}")
    waiting = (await api.client.get(f"{TASKS}/new?attempts=true", headers=bearer(key))).json()
    assert waiting["attempts"] == []  # queued, never started


async def test_a_deadline_travels_with_the_task(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    before_ms = int(time.time() * 1000)
    single = await api.client.post(
        f"{SUBMIT}?delay=1m&expires_after=10m", json={"a": 1}, headers=bearer(key)
    )
    assert single.status_code == 202, single.text
    items = [{"data": {"n": 1}, "expires_at": "2099-01-01T00:00:00Z"}, {"data": {"n": 2}}]
    refused = await api.client.post(TASKS, json={"tasks": items}, headers=bearer(key))
    assert "tasks[0].expires_at" in assert_error(refused, 422, "invalid_request")
    items[0] = {"data": {"n": 1}, "expires_after": "PT1H"}
    batch = await api.client.post(TASKS, json={"tasks": items}, headers=bearer(key))
    assert batch.status_code == 202, batch.text
    first, second, third = fakes.producer.task_events(pipeline["id"])
    assert before_ms + 600_000 <= first.submit.expires_at_ms <= int(time.time() * 1000) + 600_000
    assert second.submit.expires_at_ms > before_ms + 3_590_000
    assert third.submit.expires_at_ms == 0


@pytest.mark.parametrize(
    ("query", "field", "needle"),
    [
        ("expires_at=2020-01-01T00:00:00Z", "expires_at", "has passed"),
        ("expires_after=0s", "expires_after", "positive"),
        ("delay=10m&expires_after=5m", "expires_after", "not after the task's due time"),
        ("expires_after=1m&expires_at=2030-01-01T00:00:00Z", "expires_at", "not both"),
    ],
)
async def test_deadlines_that_could_never_be_met_are_refused(
    api: Api, fakes: Fakes, query: str, field: str, needle: str
) -> None:
    key, pipeline = await api.ready_pipeline()
    answer = await api.client.post(f"{SUBMIT}?{query}", json={"a": 1}, headers=bearer(key))
    detail = assert_error(answer, 422, "invalid_request")
    assert detail.startswith(f"{field}:") and needle in detail, detail
    assert fakes.producer.task_events(pipeline["id"]) == []


# -- bulk requeue and cancel ------------------------------------------------------------------


async def test_bulk_requeue_sends_one_requeue_per_dead_task(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    for task_id, status in (("d1", "dead"), ("d2", "dead"), ("ok", "succeeded"), ("q", "queued")):
        insert_task(
            api.database_url, pipeline_id=pipeline["id"], task_id=task_id, data=b"{}", status=status
        )
    named = await api.client.post(
        f"{TASKS}:requeue", json={"ids": ["d1", "ok", "gone", "d1"]}, headers=bearer(key)
    )
    assert named.status_code == 202, named.text
    assert [(r["id"], r["result"], r["status"]) for r in named.json()["results"]] == [
        ("d1", "requeueing", "dead"),
        ("ok", "skipped", "succeeded"),
        ("gone", "not_found", None),
    ]
    every = await api.client.post(f"{TASKS}:requeue", json={"limit": 10}, headers=bearer(key))
    assert every.json()["acted"] == 2
    events = fakes.producer.task_events(pipeline["id"])
    assert [(e.task_id, e.WhichOneof("kind")) for e in events] == [
        ("d1", "requeue"),
        ("d1", "requeue"),
        ("d2", "requeue"),
    ]


async def test_bulk_cancel_by_ids_or_status(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    for task_id, status in (("q1", "queued"), ("q2", "queued"), ("s", "scheduled"), ("x", "dead")):
        insert_task(
            api.database_url, pipeline_id=pipeline["id"], task_id=task_id, data=b"{}", status=status
        )
    named = await api.client.post(
        f"{TASKS}:cancel", json={"ids": ["s", "x", "unseen"]}, headers=bearer(key)
    )
    assert [(r["id"], r["result"]) for r in named.json()["results"]] == [
        ("s", "cancelling"),
        ("x", "skipped"),
        ("unseen", "cancelling"),  # may be on its way: cancelled behind its submit
    ]
    queued = await api.client.post(
        f"{TASKS}:cancel", json={"status": "queued", "limit": 1}, headers=bearer(key)
    )
    assert [r["id"] for r in queued.json()["results"]] == ["q1"]
    cancels = [e.task_id for e in fakes.producer.task_events(pipeline["id"])]
    assert cancels == ["s", "unseen", "q1"]
    neither = await api.client.post(f"{TASKS}:cancel", json={}, headers=bearer(key))
    assert "give ids, or a status" in assert_error(neither, 422, "invalid_request")
    too_many = await api.client.post(
        f"{TASKS}:cancel", json={"ids": [f"t{i}" for i in range(1001)]}, headers=bearer(key)
    )
    assert_error(too_many, 422, "invalid_request")


async def test_a_task_may_bring_its_own_retry_policy(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    single = await api.client.post(f"{SUBMIT}?max_attempts=6", json={"a": 1}, headers=bearer(key))
    assert single.status_code == 202, single.text
    items = [
        {"data": {"n": 1}, "retry": {"max_attempts": 2, "backoff": {"initial": "5s"}}},
        {"data": {"n": 2}},
    ]
    batch = await api.client.post(TASKS, json={"tasks": items}, headers=bearer(key))
    assert batch.status_code == 202, batch.text
    first, second, third = fakes.producer.task_events(pipeline["id"])
    assert first.submit.retry.max_attempts == 6 and not first.submit.retry.HasField("backoff")
    assert second.submit.retry.max_attempts == 2
    assert second.submit.retry.backoff.initial_s == 5.0
    assert not third.submit.HasField("retry")
    bad = [
        {"data": {"n": 1}},
        {"data": {"n": 2}, "retry": {"backoff": {"initial": "9m", "max": "1m"}}},
    ]
    refused = await api.client.post(TASKS, json={"tasks": bad}, headers=bearer(key))
    assert "tasks[1].retry.backoff" in assert_error(refused, 422, "invalid_request")
    zero = await api.client.post(f"{SUBMIT}?max_attempts=0", json={"a": 1}, headers=bearer(key))
    assert_error(zero, 422, "invalid_request")


async def test_a_pipeline_default_deadline_applies_to_tasks_given_none(
    api: Api, fakes: Fakes
) -> None:
    key, pipeline = await api.ready_pipeline()
    patched = await api.client.patch(SUBMIT, json={"expires_after": "1h"}, headers=bearer(key))
    assert patched.status_code == 200, patched.text
    assert patched.json()["expires_after_s"] == 3600
    now_ms = int(time.time() * 1000)
    await api.client.post(SUBMIT, json={"a": 1}, headers=bearer(key))
    await api.client.post(f"{SUBMIT}?delay=10m", json={"a": 2}, headers=bearer(key))
    await api.client.post(f"{SUBMIT}?expires_after=5m", json={"a": 3}, headers=bearer(key))
    items = [{"data": {"n": 1}}, {"data": {"n": 2}, "expires_after": "2m"}]
    await api.client.post(TASKS, json={"tasks": items}, headers=bearer(key))
    plain, delayed, own, batch_plain, batch_own = fakes.producer.task_events(pipeline["id"])
    hour = 3_600_000
    assert now_ms + hour <= plain.submit.expires_at_ms <= int(time.time() * 1000) + hour
    assert delayed.submit.expires_at_ms == delayed.submit.due_at_ms + hour  # after it is due
    assert own.submit.expires_at_ms < now_ms + hour  # its own deadline wins
    assert batch_plain.submit.expires_at_ms >= now_ms + hour
    assert batch_own.submit.expires_at_ms < now_ms + hour
    cleared = await api.client.patch(SUBMIT, json={"expires_after": 0}, headers=bearer(key))
    assert cleared.json()["expires_after_s"] is None
    await api.client.post(SUBMIT, json={"a": 4}, headers=bearer(key))
    assert fakes.producer.task_events(pipeline["id"])[-1].submit.expires_at_ms == 0
    bad = await api.client.patch(SUBMIT, json={"expires_after": "400d"}, headers=bearer(key))
    assert "expires_after" in assert_error(bad, 422, "invalid_request")
