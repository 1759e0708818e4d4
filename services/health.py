"""Reachability checks behind ``/readyz``: can we talk to Kafka and to the database?"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


async def check_kafka(bootstrap: str | None, *, timeout_s: float = 3) -> Check:
    if not bootstrap:
        return Check(name="kafka", ok=False, detail="WSCHED_KAFKA_BOOTSTRAP is not set")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except Exception as err:  # noqa: BLE001 - any failure means "not reachable"
        return Check(name="kafka", ok=False, detail=f"{type(err).__name__}: {err}")
    finally:
        await admin.close()
    return Check(name="kafka", ok=True)


def check_database(engine: sa.Engine) -> Check:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as err:
        return Check(name="database", ok=False, detail=f"{type(err).__name__}: {err}")
    return Check(name="database", ok=True)
