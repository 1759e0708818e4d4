"""Records of a pipeline's topic that could not be decoded: kept for inspection, skipped."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from actors.pipeline.ports import StoreUnavailable
from services.store.engine import UNREACHABLE
from services.store.schema import quarantine
from services.store.sql import to_db, upsert


@dataclass(frozen=True, kw_only=True)
class Quarantined:
    pipeline_id: str
    partition: int
    offset: int
    reason: str
    raw: bytes


class SqlQuarantine:
    def __init__(self, *, engine: sa.Engine) -> None:
        self._engine = engine

    async def keep(self, records: Sequence[Quarantined], *, now: dt.datetime) -> None:
        """Store the records; a replayed record (same partition and offset) is kept once."""
        if not records:
            return
        rows = [
            {
                "pipeline_id": r.pipeline_id,
                "topic_partition": r.partition,
                "record_offset": r.offset,
                "reason": r.reason,
                "raw": r.raw,
                "quarantined_at": to_db(now),
            }
            for r in records
        ]

        def write() -> None:
            with self._engine.begin() as conn:
                upsert(
                    conn,
                    quarantine,
                    rows,
                    keys=("pipeline_id", "topic_partition", "record_offset"),
                    update=("reason",),
                )

        try:
            await asyncio.to_thread(write)
        except UNREACHABLE as err:
            raise StoreUnavailable(str(getattr(err, "orig", None) or err)) from err

    async def count(self, pipeline_id: str) -> int:
        def count() -> int:
            with self._engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.select(sa.func.count())
                        .select_from(quarantine)
                        .where(quarantine.c.pipeline_id == pipeline_id)
                    ).scalar_one()
                )

        return await asyncio.to_thread(count)
