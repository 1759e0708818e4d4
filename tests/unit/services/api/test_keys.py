"""Tenant API keys rotated with a grace period and revoked, also where lookups are
remembered (the database down), and pipelines' worker tokens rotated."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from services.kafka.revocations import MemoryRevocations
from services.scheduler.directory import PipelineDirectory
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import OPERATOR, Api, assert_error, bearer

SUBMIT = "/api/applications/a/pipelines/p"


class Clock:
    """Wall-clock time the test moves: the store's and the API's."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock(api: Api) -> Clock:
    clock = Clock()
    api.store._clock = clock  # the store decides when a rotated-out key expires
    api.ctx.wall_clock = clock
    return clock


async def status(api: Api, key: str) -> int:
    answer = await api.client.get("/api/applications", headers=bearer(key))
    return answer.status_code


async def rotate(api: Api, tenant: str, **body: Any) -> dict[str, Any]:
    answer = await api.client.post(f"/api/tenants/{tenant}/rotate-key", json=body, headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    rotated: dict[str, Any] = answer.json()
    return rotated


def database_down(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("SELECT", {}, ConnectionRefusedError("tidb is down"))

    for name in ("tenant_by_key", "tenant_by_key_digest", "find_pipeline"):
        monkeypatch.setattr(api.store, name, down)


async def test_a_rotated_key_keeps_working_for_its_grace_period_only(
    api: Api, clock: Clock
) -> None:
    old = await api.tenant("t-acme")
    rotated = await rotate(api, "t-acme", grace_s=60)
    new = rotated["api_key"]
    assert new != old
    until = dt.datetime.fromisoformat(rotated["previous_key_valid_until"])
    assert until == clock.now + dt.timedelta(seconds=60)
    assert (await status(api, old), await status(api, new)) == (200, 200)
    clock.advance(61)
    assert_error(
        await api.client.get("/api/applications", headers=bearer(old)), 401, "unauthorized"
    )
    assert await status(api, new) == 200


async def test_without_grace_the_old_key_is_refused_at_once(api: Api) -> None:
    old = await api.tenant("t-acme")
    rotated = await rotate(api, "t-acme")
    assert rotated["previous_key_valid_until"] is None
    assert (await status(api, old), await status(api, rotated["api_key"])) == (401, 200)


async def test_a_second_rotation_ends_the_first_keys_grace(api: Api, clock: Clock) -> None:
    first = await api.tenant("t-acme")
    second = (await rotate(api, "t-acme", grace_s=600))["api_key"]
    third = (await rotate(api, "t-acme", grace_s=600))["api_key"]
    assert [await status(api, k) for k in (first, second, third)] == [401, 200, 200]


async def test_revoking_refuses_every_key_until_a_rotation(api: Api) -> None:
    old = await api.tenant("t-acme")
    graced = (await rotate(api, "t-acme", grace_s=600))["api_key"]
    answer = await api.client.post("/api/tenants/t-acme/revoke-key", headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked"] is True
    assert [await status(api, k) for k in (old, graced)] == [401, 401]
    fresh = (await rotate(api, "t-acme"))["api_key"]
    assert await status(api, fresh) == 200


async def test_a_revocation_announced_by_another_process_refuses_a_remembered_key(
    api: Api, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database down, this process answers from what it remembers: until it hears of
    the revocation (on wsched.revocations), then 401 rather than 503."""
    key, pipeline = await api.ready_pipeline()
    assert (await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))).status_code == 202
    database_down(api, monkeypatch)
    during = await api.client.post(SUBMIT, json={"n": 2}, headers=bearer(key))
    assert during.status_code == 202, during.text  # a remembered lookup answered
    await api.ctx.revocations.announce(pipeline_tenant(api, pipeline))
    refused = await api.client.post(SUBMIT, json={"n": 3}, headers=bearer(key))
    assert_error(refused, 401, "unauthorized")
    assert len(fakes.producer.task_events(pipeline["id"])) == 2  # the refused one not sent


def pipeline_tenant(api: Api, pipeline: dict[str, Any]) -> str:
    found = api.store.pipeline_by_id(pipeline["id"])
    assert found is not None
    return found.tenant_id


async def test_a_remembered_rotated_out_key_expires_while_the_database_is_down(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await api.tenant("t-acme")
    new = (await rotate(api, "t-acme", grace_s=60))["api_key"]
    assert (await status(api, old), await status(api, new)) == (200, 200)  # remembered
    database_down(api, monkeypatch)
    assert (await status(api, old), await status(api, new)) == (200, 200)
    clock.advance(61)
    assert (await status(api, old), await status(api, new)) == (401, 200)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grace_s": -1}, "grace_s"),
        ({"grace_s": 7 * 86400 + 1}, "grace_s"),
        ({"grace_s": "soon"}, "grace_s"),
        ({"grace": 5}, "grace"),
    ],
)
async def test_a_bad_grace_period_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    key, _ = await api.ready_pipeline()
    for path, headers in (
        ("/api/tenants/t-p/rotate-key", OPERATOR),
        ("/api/applications/a/pipelines/p/rotate-token", bearer(key)),
    ):
        answer = await api.client.post(path, json=body, headers=headers)
        detail = assert_error(answer, 422, "invalid_request")
        assert field in detail
        assert not any(leak in detail for leak in ("SELECT", "sqlite", "Traceback", "/tmp"))


async def test_unknown_tenants_are_404_and_a_tenant_key_cannot_rotate(api: Api) -> None:
    key = await api.tenant("t-acme")
    for path in ("/api/tenants/t-ghost/rotate-key", "/api/tenants/t-ghost/revoke-key"):
        assert "t-ghost" in assert_error(
            await api.client.post(path, json={}, headers=OPERATOR), 404, "not_found"
        )
    refused = await api.client.post("/api/tenants/t-acme/rotate-key", json={}, headers=bearer(key))
    assert_error(refused, 403, "forbidden")
    assert await status(api, key) == 200


async def test_a_rotated_worker_token_is_redeployed_and_the_old_one_expires(
    api: Api, fakes: Fakes, clock: Clock
) -> None:
    key, pipeline = await api.ready_pipeline()
    old = pipeline["worker_token"]
    revision = fakes.deployer.deployed[pipeline["id"]].revision
    answer = await api.client.post(
        "/api/applications/a/pipelines/p/rotate-token", json={"grace_s": 30}, headers=bearer(key)
    )
    assert answer.status_code == 200, answer.text
    new = answer.json()["worker_token"]
    revocations = api.ctx.revocations
    assert isinstance(revocations, MemoryRevocations)
    assert revocations.rotated == [pipeline["id"]]  # scheduler replicas read it again
    await api.settled()
    assert fakes.deployer.deployed[pipeline["id"]].revision == revision + 1  # redeployed
    assert api.store.worker_token(pipeline["id"]) == new  # what the deployer hands out
    directory = PipelineDirectory(engine=api.store._engine, window_tasks=10, token_ttl_s=0)
    verify = api.store.verify_worker_token
    assert verify(pipeline_id=pipeline["id"], token=old)
    assert verify(pipeline_id=pipeline["id"], token=new)
    assert await directory.authenticate(pipeline["id"], new)
    clock.advance(31)
    assert not verify(pipeline_id=pipeline["id"], token=old)
    assert verify(pipeline_id=pipeline["id"], token=new)
    current = await api.client.get("/api/applications/a/pipelines/p", headers=bearer(key))
    assert current.json()["state"] == "ready"


async def test_a_rotation_announced_elsewhere_bounds_a_remembered_keys_grace(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process rotated the key with a grace period while this one cannot read the
    database: the key it remembers holds until the grace ends, not for as long as it is
    remembered."""
    key, pipeline = await api.ready_pipeline()
    assert (await api.client.post(SUBMIT, json={"n": 1}, headers=bearer(key))).status_code == 202
    database_down(api, monkeypatch)
    until = clock.now + dt.timedelta(seconds=20)
    await api.ctx.revocations.announce(pipeline_tenant(api, pipeline), until=until)
    assert (await api.client.post(SUBMIT, json={"n": 2}, headers=bearer(key))).status_code == 202
    clock.advance(21)
    refused = await api.client.post(SUBMIT, json={"n": 3}, headers=bearer(key))
    assert_error(refused, 401, "unauthorized")
