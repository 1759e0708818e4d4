"""Tenant isolation, route by route: another tenant's objects answer 404 and stay untouched.

``ROUTES`` says how to call every route the app serves; a route added without an entry
fails ``test_the_table_covers_every_route``, so no route escapes the matrix. Each call is
made with tenant B's key on tenant A's names (and on B's own application or pipeline with
A's pipeline or task), and must answer exactly what a name that exists nowhere answers,
with nothing written: no row, no Kafka record, no topic, no deployment. The same call with
A's key then succeeds, which shows the 404 came from the tenant check and not from a call
that could not have worked anyway.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, routing

from services.store.schema import metadata
from tests.unit.services.api.conftest import Fakes
from tests.unit.services.api.harness import OPERATOR, Api, assert_error, bearer, insert_task

#: Served for people and probes, naming no tenant's object; their own tests cover them.
UNSCOPED = {
    *("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"),
    *("/healthz", "/readyz", "/metrics"),
    # The dashboard's page and session routes name no tenant's object either (its data
    # comes from the routes below, with a cookie); ui/test_routes.py covers their scope.
    *("/ui", "/ui/", "/ui/session", "/ui/session/tenant", "/ui/overview"),
}

Kind = Literal["operator", "tenant-wide", "scoped"]


@dataclass(frozen=True, kw_only=True)
class Call:
    """How to call one route: its body and query, and what its rightful caller gets."""

    kind: Kind
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    #: The status the owner (or the operator) gets: the control that the call works.
    ok: int
    #: Which of A's applications the path names: the busy one holds A's pipeline; only an
    #: empty application can be deleted.
    app: Literal["busy", "idle"] = "busy"
    #: The task the path names, by its state in A's pipeline.
    task: Literal["queued", "dead"] = "queued"
    #: What B gets naming A's task in B's own pipeline. Cancel checks no existence (a
    #: cancel travels behind a submit not yet admitted), so it answers 202 for B's own
    #: pipeline: nothing of A's is touched, which is what the test holds.
    foreign_task: int = 404


TENANT = "/api/tenants/{tenant}"
APPS = "/api/applications"
APP = f"{APPS}/{{app}}"
PIPELINES = f"{APP}/pipelines"
PIPELINE = f"{PIPELINES}/{{pipeline}}"
TASK = f"{PIPELINE}/tasks/{{task_id}}"
SCHEDULES = f"{PIPELINE}/schedules"
SCHEDULE = f"{SCHEDULES}/{{schedule}}"

ROUTES: dict[tuple[str, str], Call] = {
    ("POST", "/api/tenants"): Call(kind="operator", json={"name": "t-gamma"}, ok=201),
    ("GET", "/api/tenants"): Call(kind="operator", ok=200),
    ("GET", TENANT): Call(kind="operator", ok=200),
    ("PATCH", TENANT): Call(kind="operator", json={"quotas": {"max_pipelines": 5}}, ok=200),
    ("POST", f"{TENANT}/rotate-key"): Call(kind="operator", json={"grace_s": 60}, ok=200),
    ("POST", f"{TENANT}/revoke-key"): Call(kind="operator", ok=200),
    ("DELETE", TENANT): Call(kind="operator", ok=202),
    ("GET", "/api/tenant"): Call(kind="tenant-wide", ok=200),
    ("POST", APPS): Call(kind="tenant-wide", json={"name": "alpha"}, ok=201),
    ("GET", APPS): Call(kind="tenant-wide", ok=200),
    ("GET", APP): Call(kind="scoped", ok=200),
    ("DELETE", APP): Call(kind="scoped", app="idle", ok=204),
    ("GET", PIPELINES): Call(kind="scoped", ok=200),
    (
        "POST",
        PIPELINES,
    ): Call(kind="scoped", json={"name": "pz", "chart": "./charts/noop"}, ok=201),
    ("GET", PIPELINE): Call(kind="scoped", ok=200),
    ("PATCH", PIPELINE): Call(kind="scoped", json={"lease_timeout_s": 45}, ok=200),
    ("DELETE", PIPELINE): Call(kind="scoped", ok=202),
    ("POST", f"{PIPELINE}/rotate-token"): Call(kind="scoped", json={"grace_s": 60}, ok=200),
    ("POST", PIPELINE): Call(kind="scoped", json={"n": 1}, params={"id": "new-1"}, ok=202),
    ("GET", f"{PIPELINE}/stats"): Call(kind="scoped", ok=200),
    (
        "POST",
        f"{PIPELINE}/tasks",
    ): Call(kind="scoped", json={"tasks": [{"data": {"n": 1}, "id": "new-2"}]}, ok=202),
    ("GET", f"{PIPELINE}/tasks"): Call(kind="scoped", params={"status": "queued"}, ok=200),
    ("GET", TASK): Call(kind="scoped", ok=200),
    ("GET", f"{PIPELINE}/events"): Call(kind="scoped", params={"duration": "0s"}, ok=200),
    ("DELETE", TASK): Call(kind="scoped", ok=202, foreign_task=202),
    ("POST", f"{TASK}/requeue"): Call(kind="scoped", task="dead", ok=202),
    # Bulk: B's key on A's pipeline is a 404 before any task is read or touched.
    ("POST", f"{PIPELINE}/tasks:requeue"): Call(kind="scoped", json={}, ok=202),
    ("POST", f"{PIPELINE}/tasks:cancel"): Call(kind="scoped", json={"status": "queued"}, ok=202),
    ("POST", SCHEDULES): Call(kind="scoped", json={"name": "sz", "every": "1m"}, ok=201),
    ("GET", SCHEDULES): Call(kind="scoped", ok=200),
    ("GET", SCHEDULE): Call(kind="scoped", ok=200),
    ("GET", f"{SCHEDULE}/runs"): Call(kind="scoped", ok=200),
    ("PATCH", SCHEDULE): Call(kind="scoped", json={"jitter": "1s"}, ok=200),
    ("DELETE", SCHEDULE): Call(kind="scoped", ok=204),
    ("POST", f"{SCHEDULE}:pause"): Call(kind="scoped", ok=200),
    ("POST", f"{SCHEDULE}:resume"): Call(kind="scoped", ok=200),
    ("POST", f"{SCHEDULE}:trigger"): Call(kind="scoped", ok=202),
    ("POST", f"{SCHEDULE}:backfill"): Call(
        kind="scoped",
        json={"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:03:00Z"},
        ok=202,
    ),
    ("POST", f"{PIPELINE}/tasks:purge"): Call(
        kind="scoped", json={"status": "dead", "older_than": "0s"}, ok=202
    ),
}


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, docs and probes left out.

    FastAPI 0.16x keeps an included router nested in ``app.routes``;
    ``iter_route_contexts`` flattens it (older versions list every route flat).
    """
    flatten: Any = getattr(routing, "iter_route_contexts", list)
    served = set()
    for route in flatten(app.routes):
        path = getattr(route, "path", None)
        if path is None or path in UNSCOPED:
            continue
        methods = getattr(route, "methods", None) or set()
        served |= {(method, path) for method in methods if method != "HEAD"}
    return served


def test_the_table_covers_every_route(api: Api) -> None:
    served = served_routes(api.app)
    assert len(served) >= 18, served  # the flattening found the included routers
    assert set(ROUTES) == served, (
        f"routes without an entry: {sorted(served - set(ROUTES))}; "
        f"entries without a route: {sorted(set(ROUTES) - served)}"
    )


# -- the two tenants -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Names:
    tenant: str
    app: str
    idle_app: str
    pipeline: str
    tasks: dict[str, str]
    schedule: str

    def path(self, template: str, call: Call) -> str:
        return template.format(
            tenant=self.tenant,
            app=self.idle_app if call.app == "idle" else self.app,
            pipeline=self.pipeline,
            task_id=self.tasks[call.task],
            schedule=self.schedule,
        )


A = Names(
    tenant="t-alpha",
    app="alpha",
    idle_app="alpha-idle",
    pipeline="pa",
    tasks={"queued": "ta-queued", "dead": "ta-dead"},
    schedule="sa",
)
B = Names(
    tenant="t-beta",
    app="beta",
    idle_app="beta-idle",
    pipeline="pb",
    tasks={"queued": "tb-1", "dead": "tb-2"},
    schedule="sb",
)
#: Names that exist for no tenant: what a 404 must look like.
GHOST = Names(
    tenant="t-ghost",
    app="ghost",
    idle_app="ghost-idle",
    pipeline="pg",
    tasks={"queued": "tg-queued", "dead": "tg-dead"},
    schedule="sg",
)


@dataclass(frozen=True, kw_only=True)
class World:
    a_key: str
    b_key: str
    #: Every id of A's (tenant, applications, pipeline): a row naming one is A's.
    a_ids: frozenset[str]
    a_topic: str
    b_topic: str


async def tenant_with(api: Api, names: Names, tenant: str) -> tuple[str, dict[str, Any]]:
    key = await api.tenant(tenant)
    await api.application(key, names.app)
    await api.application(key, names.idle_app)
    pipeline = await api.pipeline(key, names.app, names.pipeline)
    assert pipeline["state"] == "ready", pipeline
    for status, task_id in names.tasks.items():
        insert_task(
            api.database_url,
            pipeline_id=pipeline["id"],
            task_id=task_id,
            data=b'{"n": 1}',
            status=status,
        )
    schedule = await api.client.post(
        f"{APPS}/{names.app}/pipelines/{names.pipeline}/schedules",
        json={"name": names.schedule, "every": "1m"},
        headers=bearer(key),
    )
    assert schedule.status_code == 201, schedule.text
    return key, pipeline


@pytest.fixture
async def world(api: Api) -> World:
    a_key, a_pipeline = await tenant_with(api, A, "t-alpha")
    b_key, b_pipeline = await tenant_with(api, B, "t-beta")
    a_apps = (await api.client.get(APPS, headers=bearer(a_key))).json()["applications"]
    tenant_ids = {t["name"]: t["id"] for t in (await tenants(api))}
    return World(
        a_key=a_key,
        b_key=b_key,
        a_ids=frozenset({tenant_ids["t-alpha"], a_pipeline["id"], *(a["id"] for a in a_apps)}),
        a_topic=a_pipeline["topic"],
        b_topic=b_pipeline["topic"],
    )


async def tenants(api: Api) -> list[dict[str, Any]]:
    answer = await api.client.get("/api/tenants", headers=OPERATOR)
    listed: list[dict[str, Any]] = answer.json()["tenants"]
    return listed


# -- what "nothing changed" means ----------------------------------------------------------


def all_rows(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                table.name: sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
                for table in metadata.sorted_tables
            }
    finally:
        engine.dispose()


def rows_of(rows: dict[str, list[tuple[Any, ...]]], ids: frozenset[str]) -> dict[str, Any]:
    """The rows that name one of ``ids`` in any column (a grain id starts with one)."""

    def mentions(row: tuple[Any, ...]) -> bool:
        return any(isinstance(v, str) and any(i in v for i in ids) for v in row)

    return {
        table: [row for row in table_rows if mentions(row)] for table, table_rows in rows.items()
    }


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    rows: dict[str, list[tuple[Any, ...]]]
    records: list[Any]
    topics: dict[str, int]
    deployed: dict[str, Any]
    removed: list[str]


async def snapshot(api: Api, fakes: Fakes) -> Snapshot:
    await api.settled()  # a nudge a call gave has been acted on
    return Snapshot(
        rows=all_rows(api.database_url),
        records=list(fakes.producer.records),
        topics=dict(fakes.admin.topics),
        deployed=dict(fakes.deployer.deployed),
        removed=list(fakes.deployer.removed),
    )


def assert_untouched(before: Snapshot, after: Snapshot) -> None:
    assert after.rows == before.rows
    assert after.records == before.records
    assert (after.topics, after.deployed, after.removed) == (
        before.topics,
        before.deployed,
        before.removed,
    )


async def call(
    api: Api, route: tuple[str, str], names: Names, headers: dict[str, str]
) -> httpx.Response:
    """The route's call from ``ROUTES`` on the objects ``names`` names."""
    method, template = route
    spec = ROUTES[route]
    return await api.client.request(
        method, names.path(template, spec), json=spec.json, params=spec.params, headers=headers
    )


def normalised(answer: httpx.Response, names: Names) -> tuple[int, str]:
    """The answer with the names it was given replaced, to compare with another's."""
    text = answer.text
    used = [names.idle_app, names.app, names.pipeline, *names.tasks.values(), names.schedule]
    for i, name in enumerate(sorted(used, key=len, reverse=True)):
        text = re.sub(rf"\b{re.escape(name)}\b", f"<name{i}>", text)
    return answer.status_code, text


# -- the matrix ----------------------------------------------------------------------------

SCOPED = {route: spec for route, spec in ROUTES.items() if spec.kind == "scoped"}


#: B's own application (and pipeline) around A's pipeline (and task) names.
A_PIPELINE_IN_B_APP = dataclasses.replace(A, app=B.app, idle_app=B.idle_app)
A_TASK_IN_B_PIPELINE = dataclasses.replace(A_PIPELINE_IN_B_APP, pipeline=B.pipeline)
#: A's schedule named in B's own pipeline.
A_SCHEDULE_IN_B_PIPELINE = dataclasses.replace(B, schedule=A.schedule)


@pytest.mark.parametrize("route", list(SCOPED), ids=" ".join)
async def test_another_tenants_objects_answer_404_and_stay_untouched(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    spec = SCOPED[route]
    before = await snapshot(api, fakes)

    answer = await call(api, route, A, bearer(world.b_key))
    assert_error(answer, 404, "not_found")
    assert_untouched(before, await snapshot(api, fakes))
    # Indistinguishable from names that exist for no one: the answer reveals nothing.
    ghost = await call(api, route, GHOST, bearer(world.b_key))
    assert normalised(answer, A) == normalised(ghost, GHOST)

    owner = await call(api, route, A, bearer(world.a_key))
    assert owner.status_code == spec.ok, owner.text


@pytest.mark.parametrize("route", [r for r in SCOPED if "{pipeline}" in r[1]], ids=" ".join)
async def test_a_pipeline_of_another_tenant_is_not_found_in_ones_own_application(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    before = await snapshot(api, fakes)
    answer = await call(api, route, A_PIPELINE_IN_B_APP, bearer(world.b_key))
    assert "no pipeline named 'pa'" in assert_error(answer, 404, "not_found")
    assert_untouched(before, await snapshot(api, fakes))


@pytest.mark.parametrize("route", [r for r in SCOPED if "{task_id}" in r[1]], ids=" ".join)
async def test_a_task_of_another_tenant_is_not_found_in_ones_own_pipeline(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    spec = SCOPED[route]
    before = await snapshot(api, fakes)
    answer = await call(api, route, A_TASK_IN_B_PIPELINE, bearer(world.b_key))
    assert answer.status_code == spec.foreign_task, answer.text
    after = await snapshot(api, fakes)
    assert rows_of(after.rows, world.a_ids) == rows_of(before.rows, world.a_ids)
    new = after.records[len(before.records) :]
    assert after.records[: len(before.records)] == before.records
    assert all(record.topic == world.b_topic for record in new), new
    if spec.foreign_task == 404:
        assert_error(answer, 404, "not_found")
        assert_untouched(before, after)


TENANT_WIDE = {route: spec for route, spec in ROUTES.items() if spec.kind == "tenant-wide"}


@pytest.mark.parametrize("route", list(TENANT_WIDE), ids=" ".join)
async def test_tenant_wide_routes_show_and_touch_only_ones_own(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    """Names are per tenant: B may create an application named like A's, and A's stays."""
    spec = TENANT_WIDE[route]
    before = await snapshot(api, fakes)
    answer = await call(api, route, B, bearer(world.b_key))
    assert answer.status_code == spec.ok, answer.text
    after = await snapshot(api, fakes)
    assert rows_of(after.rows, world.a_ids) == rows_of(before.rows, world.a_ids)
    assert after.records == before.records
    assert not any(i in answer.text for i in world.a_ids), answer.text
    listed = await api.client.get(APPS, headers=bearer(world.b_key))
    assert not any(i in listed.text for i in world.a_ids), listed.text


# -- keys of the wrong kind ----------------------------------------------------------------

OPERATOR_ONLY = {route: spec for route, spec in ROUTES.items() if spec.kind == "operator"}


@pytest.mark.parametrize("route", list(OPERATOR_ONLY), ids=" ".join)
async def test_operator_routes_refuse_a_tenant_key(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    spec = OPERATOR_ONLY[route]
    before = await snapshot(api, fakes)
    for key in (world.a_key, world.b_key):
        answer = await call(api, route, A, bearer(key))
        assert "operator key" in assert_error(answer, 403, "forbidden")
    assert_untouched(before, await snapshot(api, fakes))
    allowed = await call(api, route, A, OPERATOR)
    assert allowed.status_code == spec.ok, allowed.text


@pytest.mark.parametrize(
    "route", [r for r, spec in ROUTES.items() if spec.kind != "operator"], ids=" ".join
)
async def test_tenant_routes_refuse_the_operator_key_and_no_key(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    before = await snapshot(api, fakes)
    answer = await call(api, route, A, OPERATOR)
    assert "operator key" in assert_error(answer, 403, "forbidden")
    anonymous = await call(api, route, A, {})
    assert_error(anonymous, 401, "unauthorized")
    assert_untouched(before, await snapshot(api, fakes))


@pytest.mark.parametrize("route", [r for r in SCOPED if "{schedule}" in r[1]], ids=" ".join)
async def test_a_schedule_of_another_tenant_is_not_found_in_ones_own_pipeline(
    api: Api, fakes: Fakes, world: World, route: tuple[str, str]
) -> None:
    before = await snapshot(api, fakes)
    answer = await call(api, route, A_SCHEDULE_IN_B_PIPELINE, bearer(world.b_key))
    assert "no schedule named 'sa'" in assert_error(answer, 404, "not_found")
    assert_untouched(before, await snapshot(api, fakes))
