"""FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.health import check_database, check_kafka
from services.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    engine = sa.create_engine(settings.effective_database_url(), pool_pre_ping=True)
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="Workload Scheduler", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(response: Response) -> dict[str, object]:
        """Readiness: red while Kafka or the database cannot be reached."""
        kafka, database = await asyncio.gather(
            check_kafka(settings.kafka_bootstrap),
            asyncio.to_thread(check_database, engine),
        )
        checks = [kafka, database]
        ready = all(check.ok for check in checks)
        response.status_code = 200 if ready else 503
        return {
            "status": "ready" if ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
