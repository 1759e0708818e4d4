"""Deleting a tenant: its pipelines (workers, topics, tasks), namespace and rows go, step
by step, resumed after a crash; its name can be used again at once after."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from services.deploy.ports import NoopDeployer
from services.store.control import STEP_NAMESPACE
from services.store.schema import (
    applications,
    pipelines,
    tasks,
    tenant_submit_buckets,
    tenants,
)
from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import (
    OPERATOR,
    Api,
    assert_error,
    bearer,
    deleted,
    insert_task,
    running_api,
    settings_for,
    tenant_state,
)


def count(api: Api, table: sa.Table, **where: str) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with api.store._engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


async def busy_tenant(api: Api, name: str) -> tuple[str, list[dict[str, Any]]]:
    """A tenant with two applications, three ready pipelines and tasks in each."""
    key = await api.tenant(name)
    made = []
    for app, pipeline in (("a", "p1"), ("a", "p2"), ("b", "p3")):
        if pipeline != "p2":
            await api.application(key, app)
        # Topics of their own, to see them removed.
        made.append(await api.pipeline(key, app, pipeline, topic="dedicated"))
        for n in range(3):
            insert_task(
                api.database_url,
                pipeline_id=made[-1]["id"],
                task_id=f"{pipeline}-{n}",
                data=b"{}",
                status="succeeded",
                result=b"{}",
            )
    return key, made


async def test_deleting_a_tenant_removes_everything_it_had(api: Api, fakes: Fakes) -> None:
    key, made = await busy_tenant(api, "t-doomed")
    other_key, other = await api.ready_pipeline("keep")
    doomed = api.store.tenant_by_name("t-doomed")
    assert doomed is not None
    api.store.draw_submit_tokens(doomed.id, rate=10, burst=10, now_s=0, need=1, want=1)
    assert count(api, tenant_submit_buckets, tenant_id=doomed.id) == 1
    answer = await api.client.delete("/api/tenants/t-doomed", headers=OPERATOR)
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "deleting"
    assert_error(
        await api.client.get("/api/applications", headers=bearer(key)), 401, "unauthorized"
    )
    await api.settled()

    state = await deleted(api, "t-doomed")
    assert state.namespace == "wsched-t-doomed"
    ids = [p["id"] for p in made]
    assert sorted(fakes.deployer.removed) == sorted(ids)  # workers uninstalled
    assert not any(p["topic"] in fakes.admin.topics for p in made)  # topics removed
    assert fakes.deployer.removed_namespaces == ["wsched-t-doomed"]
    for pipeline_id in ids:
        assert count(api, tasks, pipeline_id=pipeline_id) == 0
    assert count(api, pipelines, tenant_id=state.tenant_id) == 0
    assert count(api, applications, tenant_id=state.tenant_id) == 0
    assert count(api, tenant_submit_buckets, tenant_id=state.tenant_id) == 0
    assert count(api, tenants, name="t-doomed") == 0
    listed = (await api.client.get("/api/tenants", headers=OPERATOR)).json()["tenants"]
    assert [t["name"] for t in listed] == ["t-keep"]
    # The other tenant is untouched.
    mine = await api.client.get("/api/applications/a/pipelines/keep", headers=bearer(other_key))
    assert mine.json()["state"] == "ready" and other["topic"] in fakes.admin.topics


async def test_deleting_again_is_harmless_and_an_unknown_tenant_is_404(
    api: Api, fakes: Fakes
) -> None:
    await busy_tenant(api, "t-twice")
    first = await api.client.delete("/api/tenants/t-twice", headers=OPERATOR)
    second = await api.client.delete("/api/tenants/t-twice", headers=OPERATOR)
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["deletion"]["started_at"] == first.json()["deletion"]["started_at"]
    await api.settled()
    gone = await api.client.delete("/api/tenants/t-twice", headers=OPERATOR)
    assert "t-twice" in assert_error(gone, 404, "not_found")
    assert fakes.deployer.removed_namespaces == ["wsched-t-twice"]
    rotate = await api.client.post("/api/tenants/t-twice/rotate-key", json={}, headers=OPERATOR)
    assert_error(rotate, 404, "not_found")


async def test_a_deletion_finishing_between_lookup_and_start_is_404_not_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schemathesis found it: a background deletion removed the row after the route had
    found the tenant, and the start of the next one raised out of the route."""
    await api.tenant("t-race")
    start = api.store.start_tenant_deletion

    def finished_meanwhile(tenant_id: str, **kw: Any) -> Any:
        with api.store._engine.begin() as conn:
            conn.execute(sa.delete(tenants).where(tenants.c.id == tenant_id))
        return start(tenant_id, **kw)

    monkeypatch.setattr(api.store, "start_tenant_deletion", finished_meanwhile)
    answer = await api.client.delete("/api/tenants/t-race", headers=OPERATOR)
    assert "t-race" in assert_error(answer, 404, "not_found")


class FlakyNamespaces(NoopDeployer):
    """The cluster refuses the namespace's deletion until told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster_down = True

    async def remove_tenant(self, namespace: str) -> None:
        if self.cluster_down:
            raise ConnectionError("the Kubernetes API is unreachable")
        await super().remove_tenant(namespace)


async def test_a_deletion_interrupted_is_shown_and_resumed_by_a_new_process(
    migrated_sqlite: str, fakes: Fakes
) -> None:
    flaky = FlakyNamespaces()
    settings = settings_for(migrated_sqlite)
    ports: dict[str, Any] = {"producer": fakes.producer, "admin": fakes.admin}
    async with running_api(settings, limits=LIMITS, deployer=flaky, **ports) as first:
        _, made = await busy_tenant(first, "t-crash")
        await first.client.delete("/api/tenants/t-crash", headers=OPERATOR)
        await first.settled()
        state = await tenant_state(first, "t-crash")
        assert state["state"] == "deleting"
        assert state["deletion"]["step"] == STEP_NAMESPACE
        assert "unreachable" in state["deletion"]["detail"]
        assert state["deletion"]["pipelines_left"] == 0
    # The process is gone (as after a crash); the next one resumes at its start-up scan.
    flaky.cluster_down = False
    async with running_api(settings, limits=LIMITS, deployer=flaky, **ports) as second:
        await second.reconciler.scan()
        await second.settled()
        await deleted(second, "t-crash")
        assert flaky.removed_namespaces == ["wsched-t-crash"]
        assert sorted(flaky.removed) == sorted(p["id"] for p in made)


async def test_a_deletion_recorded_but_not_started_is_carried_out_by_the_scan(
    api: Api, fakes: Fakes
) -> None:
    """A crash right after the DELETE answered: only the database knows of it."""
    _, made = await busy_tenant(api, "t-quiet")
    tenant = api.store.tenant_by_name("t-quiet")
    assert tenant is not None
    api.store.start_tenant_deletion(tenant.id, default_namespace="wsched-t-quiet")
    await api.reconciler.scan()
    await api.settled()
    await deleted(api, "t-quiet")
    assert sorted(fakes.deployer.removed) == sorted(p["id"] for p in made)


async def test_a_tenant_recreated_under_the_name_gets_a_namespace_of_its_own(
    api: Api, fakes: Fakes
) -> None:
    await busy_tenant(api, "t-again")
    await api.client.delete("/api/tenants/t-again", headers=OPERATOR)
    await api.settled()
    key = await api.tenant("t-again")  # the old namespace may still be terminating
    await api.application(key, "a")
    pipeline = await api.pipeline(key, "a", "p1")
    assert pipeline["state"] == "ready"
    names = api.store.pipeline_names(pipeline["id"])
    assert names is not None and names.namespace is not None
    assert names.namespace.startswith("wsched-t-again-") and len(names.namespace) <= 63
    state = await tenant_state(api, "t-again")
    assert state["state"] == "active" and state["deletion"] is None
    # Deleted in its turn, it removes its own namespace, never the old one again.
    await api.client.delete("/api/tenants/t-again", headers=OPERATOR)
    await api.settled()
    assert fakes.deployer.removed_namespaces == ["wsched-t-again", names.namespace]


async def test_a_bad_tenant_name_answers_404_without_touching_anything(api: Api) -> None:
    await api.tenant("t-acme")
    for name in ("T-ACME", "x" * 41, "t-acme%0A"):
        answer = await api.client.delete(f"/api/tenants/{name}", headers=OPERATOR)
        assert_error(answer, 404, "not_found")
    assert (await tenant_state(api, "t-acme"))["state"] == "active"
