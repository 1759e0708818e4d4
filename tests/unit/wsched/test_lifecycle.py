"""Tenants' keys and deletion, pipelines' worker tokens: the calls as the API spells them
and their answers read back, blocking and async alike."""

from __future__ import annotations

import datetime as dt

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer

UNTIL = "2026-11-26T13:00:00Z"
TENANT = {"id": "t1", "name": "acme", "created_at": "2026-11-26T12:00:00Z"}
QUOTAS = {"quotas": {}, "overrides": {}, "usage": {"pipelines": 2, "backlog": 0}}


def client(api: FakeApi) -> wsched.Client:
    clock = Clock()
    return wsched.Client(
        "http://api", api_key="k", transport=api.transport(), sleep=clock.sleep, clock=clock
    )


def test_rotations_send_the_grace_period_and_read_the_new_secret() -> None:
    api = FakeApi().then(
        answer(200, {"api_key": "wsk_new", "previous_key_valid_until": UNTIL}),
        answer(200, {"worker_token": "wst_new", "previous_token_valid_until": None}),
    )
    with client(api) as sdk:
        key = sdk.tenants.rotate_key("acme", grace_s=3600)
        token = sdk.pipelines.rotate_token("shop", "echo")
    assert [(r.method, r.url.path) for r in api.requests] == [
        ("POST", "/api/tenants/acme/rotate-key"),
        ("POST", "/api/applications/shop/pipelines/echo/rotate-token"),
    ]
    assert api.bodies() == [{"grace_s": 3600}, {"grace_s": 0}]
    assert key.secret == "wsk_new"
    assert key.previous_valid_until == dt.datetime(2026, 11, 26, 13, tzinfo=dt.UTC)
    assert (token.secret, token.previous_valid_until) == ("wst_new", None)


def test_revoke_get_and_delete_a_tenant() -> None:
    deleting = {
        **TENANT,
        "state": "deleting",
        "deletion": {"step": "pipelines", "pipelines_left": 2, "namespace": "wsched-acme"},
    }
    api = FakeApi().then(
        answer(200, {"revoked": True, "detail": "every key of the tenant is refused"}),
        answer(202, deleting),
        answer(200, {**deleting, **QUOTAS, "deletion": {"step": "namespace"}}),
    )
    with client(api) as sdk:
        sdk.tenants.revoke_key("acme")  # raises on anything but a 2xx
        started = sdk.tenants.delete("acme")
        done = sdk.tenants.get("acme")
    assert [(r.method, r.url.path) for r in api.requests] == [
        ("POST", "/api/tenants/acme/revoke-key"),
        ("DELETE", "/api/tenants/acme"),
        ("GET", "/api/tenants/acme"),
    ]
    assert (started.name, started.state) == ("acme", "deleting")
    assert started.deletion is not None and started.deletion["pipelines_left"] == 2
    assert (done.state, done.deletion) == ("deleting", {"step": "namespace"})
    assert done.usage == {"pipelines": 2, "backlog": 0}


async def test_the_async_client_makes_the_same_calls() -> None:
    api = FakeApi().then(
        answer(200, {"api_key": "wsk_new", "previous_key_valid_until": None}),
        answer(200, {**TENANT, **QUOTAS, "state": "active", "deletion": None}),
    )
    clock = Clock()
    async with wsched.AsyncClient(
        "http://api", api_key="k", transport=api.transport(), sleep=clock.async_sleep, clock=clock
    ) as sdk:
        rotated = await sdk.tenants.rotate_key("acme")
        current = await sdk.tenants.get("acme")
    assert rotated.secret == "wsk_new" and current.state == "active"
    assert [r.url.path for r in api.requests] == [
        "/api/tenants/acme/rotate-key",
        "/api/tenants/acme",
    ]
