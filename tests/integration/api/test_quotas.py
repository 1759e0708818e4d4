"""Tenants' quotas on real Kafka and TiDB: each limit refuses with a 4xx naming its quota
(429 with Retry-After for the submit rate and the backlog), overrides take effect, and
the other tenant is never held back. The scheduler does not run: the backlog is given
as a grain's flush would write it (``pipeline_stats``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.settings import Settings
from services.store.schema import pipeline_stats
from tests.integration.api.conftest import LIMITS
from tests.unit.services.api.harness import (
    OPERATOR,
    Api,
    assert_error,
    bearer,
    running_api,
    settings_for,
)

pytestmark = pytest.mark.integration

SUBMIT = "/api/applications/a/pipelines/p"
#: What no error a tenant reads may carry: SQL, or a path or address of the API's machine.
LEAKS = re.compile(
    r"select |insert |update |from `|pymysql|sqlalchemy|/tmp/|/home/|127\.0\.0\.1", re.I
)


def quota_settings(url: str, bootstrap: str, **quotas: Any) -> Settings:
    base = settings_for(url, kafka_bootstrap=bootstrap)
    return base.model_copy(update={f"quota_{name}": value for name, value in quotas.items()})


@contextlib.asynccontextmanager
async def api_with(url: str, bootstrap: str, **quotas: Any) -> AsyncIterator[Api]:
    async with running_api(quota_settings(url, bootstrap, **quotas), limits=LIMITS) as api:
        yield api


def refused(answer: httpx.Response, status: int, error: str, quota: str) -> str:
    detail = assert_error(answer, status, error)
    assert quota in detail, detail
    assert not LEAKS.search(detail), detail
    return detail


def retry_after(answer: httpx.Response) -> int:
    value = int(answer.headers["Retry-After"])
    assert value >= 1
    return value


async def submit(api: Api, key: str, n: int = 1) -> httpx.Response:
    return await api.client.post(
        f"{SUBMIT}/tasks",
        json={"tasks": [{"data": {"i": i}} for i in range(n)]},
        headers=bearer(key),
    )


async def patch(api: Api, tenant: str, **quotas: Any) -> dict[str, Any]:
    answer = await api.client.patch(
        f"/api/tenants/{tenant}", json={"quotas": quotas}, headers=OPERATOR
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def flush_stats(url: str, pipeline_id: str, counts: dict[str, int]) -> None:
    """Write the pipeline's counters as its grain's flush does."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(pipeline_stats.delete().where(pipeline_stats.c.pipeline_id == pipeline_id))
            conn.execute(
                pipeline_stats.insert().values(
                    pipeline_id=pipeline_id,
                    counts_json=json.dumps(counts),
                    updated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                )
            )
    finally:
        engine.dispose()


async def test_the_submit_rate_answers_429_with_retry_after_and_spares_other_tenants(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    async with api_with(tidb_api_url, kafka_bootstrap, submit_rate=2.0, submit_burst=4) as api:
        a_key, _ = await api.ready_pipeline("p")
        b_key = await api.tenant("t-b")
        await api.application(b_key, "a")
        await api.pipeline(b_key, "a", "p")
        assert (await submit(api, a_key, 4)).status_code == 202
        over = await submit(api, a_key, 1)
        refused(over, 429, "rate_limited", "submit_rate")
        assert retry_after(over) <= 2
        single = await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(a_key))
        refused(single, 429, "rate_limited", "submit_rate")
        # B has a bucket of its own, full.
        assert (await submit(api, b_key, 4)).status_code == 202
        await asyncio.sleep(retry_after(over) + 0.1)
        # A batch larger than the burst could never pass: 413, not a 429 to retry forever
        # (while the bucket is known to be empty, the 429 comes first: the body is not
        # read then).
        refused(await submit(api, a_key, 5), 413, "batch_too_large", "submit_burst")
        assert (await submit(api, a_key, 1)).status_code == 202


async def test_the_submit_rate_holds_across_two_api_processes(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    """Two APIs on one database, a tenant submitting through both as fast as it can:
    together they grant the burst and what the rate refilled, not twice that."""
    async with (
        api_with(tidb_api_url, kafka_bootstrap, submit_rate=5.0, submit_burst=10) as one,
        api_with(tidb_api_url, kafka_bootstrap, submit_rate=5.0, submit_burst=10) as two,
    ):
        key, _ = await one.ready_pipeline("p")
        loop = asyncio.get_running_loop()
        started, granted = loop.time(), 0
        while loop.time() - started < 2.0:
            for api in (one, two):
                answer = await submit(api, key, 1)
                assert answer.status_code in (202, 429), answer.text
                granted += answer.status_code == 202
            await asyncio.sleep(0.02)
        elapsed = loop.time() - started
        assert granted <= 10 + 5.0 * elapsed + 1, granted
        assert granted >= 10, granted


async def test_max_pipelines_is_a_403_naming_it_and_an_override_lifts_it(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    async with api_with(tidb_api_url, kafka_bootstrap, max_pipelines=1) as api:
        a_key, _ = await api.ready_pipeline("p")
        create = {"name": "q", "chart": "./charts/noop"}
        path = "/api/applications/a/pipelines"
        answer = await api.client.post(path, json=create, headers=bearer(a_key))
        refused(answer, 403, "quota_exceeded", "max_pipelines")
        # Another tenant at the same default has a count of its own.
        b_key, _ = await api.ready_pipeline("other")
        theirs = await api.client.get("/api/tenant", headers=bearer(b_key))
        assert theirs.json()["usage"]["pipelines"] == 1
        shown = await patch(api, "t-p", max_pipelines=2)
        assert shown["overrides"]["max_pipelines"] == 2
        assert shown["quotas"]["max_pipelines"] == 2
        answer = await api.client.post(path, json=create, headers=bearer(a_key))
        assert answer.status_code == 201, answer.text
        await api.settled()
        mine = await api.client.get("/api/tenant", headers=bearer(a_key))
        assert mine.status_code == 200, mine.text
        assert mine.json()["usage"]["pipelines"] == 2
        assert mine.json()["quotas"]["max_pipelines"] == 2
        # null: back to the operator's default.
        cleared = await patch(api, "t-p", max_pipelines=None)
        assert cleared["overrides"]["max_pipelines"] is None
        assert cleared["quotas"]["max_pipelines"] == 1


async def test_max_backlog_counts_the_flushed_counters_and_answers_429(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    async with api_with(tidb_api_url, kafka_bootstrap, max_backlog=10) as api:
        a_key, a_pipeline = await api.ready_pipeline("p")
        b_key, b_pipeline = await api.ready_pipeline("q")
        flush_stats(tidb_api_url, a_pipeline["id"], {"queued": 6, "scheduled": 2, "succeeded": 50})
        flush_stats(tidb_api_url, b_pipeline["id"], {"queued": 6, "scheduled": 2})
        over = await submit(api, a_key, 3)
        detail = refused(over, 429, "backlog_full", "max_backlog")
        assert "8 tasks" in detail, detail
        retry_after(over)
        assert (await submit(api, a_key, 2)).status_code == 202
        # What this process accepted counts at once, before the grain flushes it.
        refused(await submit(api, a_key, 1), 429, "backlog_full", "max_backlog")
        other = await api.client.post(
            "/api/applications/a/pipelines/q/tasks",
            json={"tasks": [{"data": {"i": 1}}, {"data": {"i": 2}}]},
            headers=bearer(b_key),
        )
        assert other.status_code == 202, other.text
        mine = await api.client.get("/api/tenant", headers=bearer(a_key))
        assert mine.json()["usage"]["backlog"] == 8
        await patch(api, "t-p", max_backlog=0)  # unbounded for this tenant
        assert (await submit(api, a_key, 5)).status_code == 202


async def test_max_request_bytes_override_is_a_413_for_that_tenant_only(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    async with api_with(tidb_api_url, kafka_bootstrap) as api:
        a_key, _ = await api.ready_pipeline("p")
        b_key, _ = await api.ready_pipeline("q")
        await patch(api, "t-p", max_request_bytes=2048)
        body = {"blob": "x" * 3000}
        answer = await api.client.post(SUBMIT, json=body, headers=bearer(a_key))
        refused(answer, 413, "request_too_large", "max_request_bytes")
        answer = await api.client.post(
            "/api/applications/a/pipelines/q", json=body, headers=bearer(b_key)
        )
        assert answer.status_code == 202, answer.text
        small = await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(a_key))
        assert small.status_code == 202, small.text


async def test_the_operator_reads_and_sets_quotas_and_bad_overrides_are_refused(
    tidb_api_url: str, kafka_bootstrap: str
) -> None:
    async with api_with(tidb_api_url, kafka_bootstrap, submit_rate=100.0) as api:
        await api.tenant("t-p")
        shown = await api.client.get("/api/tenants/t-p", headers=OPERATOR)
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["quotas"]["submit_rate"] == 100.0
        assert set(body["overrides"].values()) == {None}
        assert body["usage"] == {"pipelines": 0, "backlog": 0}
        changed = await patch(api, "t-p", submit_rate=0, submit_burst=7)
        assert changed["quotas"]["submit_rate"] is None  # 0: unbounded
        assert changed["overrides"]["submit_burst"] == 7
        unknown = await api.client.patch(
            "/api/tenants/t-nobody", json={"quotas": {"max_backlog": 1}}, headers=OPERATOR
        )
        assert "t-nobody" in assert_error(unknown, 404, "not_found")
        negative = await api.client.patch(
            "/api/tenants/t-p", json={"quotas": {"max_backlog": -1}}, headers=OPERATOR
        )
        assert "max_backlog" in assert_error(negative, 422, "invalid_request")
        typo = await api.client.patch(
            "/api/tenants/t-p", json={"quotas": {"max_pipeline": 1}}, headers=OPERATOR
        )
        assert "max_pipeline" in assert_error(typo, 422, "invalid_request")
