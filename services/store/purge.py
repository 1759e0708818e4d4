"""Removal of finished tasks past their retention where the database has no TTL.

TiDB purges rows itself (the tables carry a TTL attribute, see the migrations). SQLite has
no such thing, so the scheduler deletes expired rows in small batches instead: one big
DELETE would hold SQLite's single write lock for as long as it runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import sqlalchemy as sa

from services.store.schema import task_attempts, tasks
from services.store.sql import to_db

log = logging.getLogger("wsched.store.purge")


def needs_purge(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def purge_expired(engine: sa.Engine, *, now: dt.datetime, batch: int = 1000) -> int:
    """Delete expired rows of ``tasks`` and ``task_attempts``; return how
    many went."""
    rowid: sa.ColumnClause[int] = sa.literal_column("rowid", sa.Integer)  # SQLite's row key
    removed = 0
    for table in (task_attempts, tasks):
        while True:
            victims = (
                sa.select(rowid)
                .select_from(table)
                .where(table.c.expire_at.is_not(None), table.c.expire_at < to_db(now))
                .limit(batch)
            )
            with engine.begin() as conn:
                gone = conn.execute(sa.delete(table).where(rowid.in_(victims))).rowcount
            removed += gone
            if gone < batch:
                break
    return removed


async def purge_forever(engine: sa.Engine, *, interval_s: float = 300.0) -> None:
    """Purge now and then every ``interval_s`` until cancelled."""
    while True:
        try:
            removed = await asyncio.to_thread(purge_expired, engine, now=dt.datetime.now(dt.UTC))
            if removed:
                log.info("purged %d expired task rows", removed)
        except sa.exc.SQLAlchemyError as err:
            log.warning("purge of expired tasks failed, retrying later: %s", err)
        await asyncio.sleep(interval_s)
