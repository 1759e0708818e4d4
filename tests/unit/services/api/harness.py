"""Drive the API in-process: its lifespan (reconciler) runs, requests go through ASGI."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import SecretStr

from services.api.app import create_app
from services.api.context import ApiContext
from services.api.limits import Limits
from services.api.reconciler import Reconciler
from services.deploy.ports import Deployer
from services.kafka.admin import TopicAdmin
from services.kafka.producer import EventProducer
from services.observability import Tracing
from services.settings import Settings
from services.store import migrate
from services.store.control import ControlStore, TenantDeletion
from services.store.schema import tasks

OPERATOR_KEY = "test-operator-key"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(answer: httpx.Response, status: int, error: str) -> str:
    """The answer is the API's error shape with this status and code; returns the detail."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error, body
    detail: str = body["detail"]
    assert detail, body
    return detail


def insert_task(
    database_url: str,
    *,
    pipeline_id: str,
    task_id: str,
    data: bytes,
    status: str = "queued",
    result: bytes | None = None,
    created_at: dt.datetime | None = None,
) -> None:
    """Write a task row as the scheduler's admission would (for idempotency and reads);
    ``created_at``: when it was admitted (UTC; default now)."""
    now = (created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    row = {
        "pipeline_id": pipeline_id,
        "id": task_id,
        "attempt": 1,
        "status": status,
        "due_at": now,
        "data": data,
        "data_sha256": hashlib.sha256(data).digest(),
        "created_at": now,
        "updated_at": now,
        "finished_at": now if status in ("succeeded", "failed", "dead", "cancelled") else None,
        "error": "boom" if status in ("failed", "dead") else None,
        "result": result,
    }
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(tasks.insert().values(row))
    finally:
        engine.dispose()


def settings_for(database_url: str, *, kafka_bootstrap: str | None = None) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        operator_key=SecretStr(OPERATOR_KEY),
    )


def migrated(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


@dataclass(kw_only=True)
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    database_url: str

    @property
    def ctx(self) -> ApiContext:
        ctx: ApiContext = self.app.state.ctx
        return ctx

    @property
    def store(self) -> ControlStore:
        return self.ctx.store

    @property
    def reconciler(self) -> Reconciler:
        reconciler: Reconciler = self.app.state.reconciler
        return reconciler

    async def settled(self) -> None:
        """Wait until the reconciler has nothing under way."""
        await self.reconciler.idle()

    async def tenant(self, name: str) -> str:
        answer = await self.client.post("/api/tenants", json={"name": name}, headers=OPERATOR)
        assert answer.status_code == 201, answer.text
        key: str = answer.json()["api_key"]
        return key

    async def application(self, key: str, name: str) -> None:
        answer = await self.client.post(
            "/api/applications", json={"name": name}, headers=bearer(key)
        )
        assert answer.status_code == 201, answer.text

    async def pipeline(self, key: str, app: str, name: str, **fields: Any) -> dict[str, Any]:
        """Create a pipeline and wait for the reconciler to finish with it; its state now."""
        body = {"name": name, "chart": "./charts/noop", **fields}
        answer = await self.client.post(
            f"/api/applications/{app}/pipelines", json=body, headers=bearer(key)
        )
        assert answer.status_code == 201, answer.text
        await self.settled()
        current = await self.client.get(
            f"/api/applications/{app}/pipelines/{name}", headers=bearer(key)
        )
        assert current.status_code == 200, current.text
        created: dict[str, Any] = answer.json()
        state: dict[str, Any] = current.json()
        return {**state, "worker_token": created["worker_token"]}

    async def ready_pipeline(self, name: str = "p", **fields: Any) -> tuple[str, dict[str, Any]]:
        """A tenant ``t-<name>`` with application ``a`` and a ready pipeline ``name``."""
        key = await self.tenant(f"t-{name}")
        await self.application(key, "a")
        pipeline = await self.pipeline(key, "a", name, **fields)
        assert pipeline["state"] == "ready", pipeline
        return key, pipeline


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings,
    *,
    limits: Limits | None = None,
    producer: EventProducer | None = None,
    admin: TopicAdmin | None = None,
    deployer: Deployer | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[Api]:
    app = create_app(
        settings,
        limits=limits,
        producer=producer,
        admin=admin,
        deployer=deployer,
        tracing=tracing,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app=app, client=client, database_url=settings.effective_database_url())


async def tenant_state(api: Api, name: str) -> dict[str, Any]:
    """The operator's view of a tenant: quotas, usage, state and deletion progress."""
    answer = await api.client.get(f"/api/tenants/{name}", headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


async def deleted(api: Api, name: str) -> TenantDeletion:
    """The tenant is gone: its GET says since when; its finished deletion, as recorded."""
    answer = await api.client.get(f"/api/tenants/{name}", headers=OPERATOR)
    assert "was deleted at" in assert_error(answer, 404, "not_found")
    deletion = api.store.tenant_deletion_named(name)
    assert deletion is not None and deletion.finished_at is not None
    assert (deletion.step, deletion.pipelines_left) == ("done", 0)
    return deletion
