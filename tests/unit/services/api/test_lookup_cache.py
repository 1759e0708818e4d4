"""A burst of requests reads its tenant and pipeline once (``lookup_cache_s``), and
nothing a tenant or operator changes through this process waits for the cache."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from services.store.schema import pipelines
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import OPERATOR, Api, assert_error, bearer

SUBMIT = "/api/applications/a/pipelines/p"


def count_reads(api: Api, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the store's tenant and pipeline lookups from now on."""
    reads: Counter[str] = Counter()
    for name in ("tenant_by_key", "find_pipeline"):
        real: Callable[..., Any] = getattr(api.store, name)

        def counted(
            *args: Any, _real: Callable[..., Any] = real, _name: str = name, **kw: Any
        ) -> Any:
            reads[_name] += 1
            return _real(*args, **kw)

        monkeypatch.setattr(api.store, name, counted)
    return reads


async def test_a_burst_of_submits_reads_its_tenant_and_pipeline_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await api.ready_pipeline()
    reads = count_reads(api, monkeypatch)
    for n in range(20):
        answer = await api.client.post(SUBMIT, json={"n": n}, headers=bearer(key))
        assert answer.status_code == 202, answer.text
    # The tenant may still be remembered from setting the pipeline up: at most one read.
    assert reads["tenant_by_key"] <= 1 and reads["find_pipeline"] == 1, reads


async def test_without_the_cache_every_submit_reads(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await api.ready_pipeline()
    monkeypatch.setattr(api.ctx, "limits", dataclasses.replace(api.ctx.limits, lookup_cache_s=0))
    reads = count_reads(api, monkeypatch)
    for n in range(5):
        assert (
            await api.client.post(SUBMIT, json={"n": n}, headers=bearer(key))
        ).status_code == 202
    assert reads == {"tenant_by_key": 5, "find_pipeline": 5}


async def test_a_revoked_key_is_refused_at_once_though_remembered(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    assert (await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))).status_code == 202
    revoked = await api.client.post("/api/tenants/t-p/revoke-key", headers=OPERATOR)
    assert revoked.status_code == 200, revoked.text
    answer = await api.client.post(SUBMIT, json={"n": 2}, headers=bearer(key))
    assert_error(answer, 401, "unauthorized")


async def test_a_pipeline_deleted_here_takes_no_more_submits(api: Api, fakes: Fakes) -> None:
    key, pipeline = await api.ready_pipeline()
    assert (await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))).status_code == 202
    deleted = await api.client.delete(SUBMIT, headers=bearer(key))
    assert deleted.status_code == 202, deleted.text
    answer = await api.client.post(SUBMIT, json={"n": 2}, headers=bearer(key))
    assert_error(answer, 404, "not_found")
    assert len(fakes.producer.task_events(pipeline["id"])) == 1


async def test_a_pipeline_not_ready_is_read_again_until_it_is(api: Api) -> None:
    """Only a ready pipeline answers from memory: one provisioning takes submits the
    moment the database says it is ready, not a cache period later."""
    key, _ = await api.ready_pipeline()
    with sa.create_engine(api.database_url).begin() as conn:
        conn.execute(pipelines.update().values(state="provisioning", state_reason=""))
    tenant = api.store.tenant_by_key(key)
    assert tenant is not None
    api.ctx.forget_pipeline(tenant_id=tenant.id, application="a", name="p")
    assert_error(
        await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key)), 409, "pipeline_not_ready"
    )
    with sa.create_engine(api.database_url).begin() as conn:
        conn.execute(pipelines.update().values(state="ready"))
    assert (await api.client.post(SUBMIT, json={"n": 2}, headers=bearer(key))).status_code == 202


async def test_quotas_changed_here_hold_at_once(api: Api) -> None:
    key, _ = await api.ready_pipeline()
    assert (await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))).status_code == 202
    patched = await api.client.patch(
        "/api/tenants/t-p", json={"quotas": {"max_request_bytes": 1024}}, headers=OPERATOR
    )
    assert patched.status_code == 200, patched.text
    big = {"tasks": [{"data": {"x": "y" * 300}} for _ in range(5)]}
    answer = await api.client.post(f"{SUBMIT}/tasks", json=big, headers=bearer(key))
    assert_error(answer, 413, "request_too_large")


async def test_requests_that_miss_together_share_one_read(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await api.ready_pipeline()
    monkeypatch.setattr(
        api.ctx, "_last_known", type(api.ctx._last_known)(max_age_s=600, clock=api.ctx.clock)
    )
    reads = count_reads(api, monkeypatch)
    answers = await asyncio.gather(
        *(api.client.post(SUBMIT, json={"n": n}, headers=bearer(key)) for n in range(10))
    )
    assert [a.status_code for a in answers] == [202] * 10
    assert reads == {"tenant_by_key": 1, "find_pipeline": 1}


async def test_a_lookup_past_half_its_age_is_read_again_while_it_answers(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await api.ready_pipeline()
    now = [0.0]
    monkeypatch.setattr(
        api.ctx, "_last_known", type(api.ctx._last_known)(max_age_s=600, clock=lambda: now[0])
    )
    assert (await api.client.post(SUBMIT, json={"n": 0}, headers=bearer(key))).status_code == 202
    reads = count_reads(api, monkeypatch)
    # The database is slow now: a read waits until released.
    release = threading.Event()
    real = api.store.find_pipeline

    def slow(*args: Any, **kw: Any) -> Any:
        release.wait(5)
        return real(*args, **kw)

    monkeypatch.setattr(api.store, "find_pipeline", slow)
    now[0] = api.ctx.limits.lookup_cache_s * 0.75
    # Past half its age, the remembered pipeline still answers at once ...
    answer = await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))
    assert answer.status_code == 202
    assert not release.is_set()
    # ... while it is read again in the background, once for all the requests meanwhile.
    assert (await api.client.post(SUBMIT, json={"n": 2}, headers=bearer(key))).status_code == 202
    release.set()
    async with asyncio.timeout(5):
        while api.ctx._reading:
            await asyncio.sleep(0.01)
    assert reads == {"tenant_by_key": 1, "find_pipeline": 1}
    # Read afresh: young again, so the next submits read nothing.
    for n in range(3, 6):
        assert (
            await api.client.post(SUBMIT, json={"n": n}, headers=bearer(key))
        ).status_code == 202
    assert reads == {"tenant_by_key": 1, "find_pipeline": 1}
