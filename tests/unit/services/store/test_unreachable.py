"""A database that cannot serve now is ``StoreUnavailable`` (retried, or UNAVAILABLE to a
worker), never an internal error: a pool with every connection held past its timeout too,
as when TiDB hangs and the statements in flight wait on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from actors.pipeline.ports import StoreUnavailable
from services.store.fencing import in_transaction


def one(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT 1")).scalar_one())


async def test_a_pool_timeout_is_store_unavailable(tmp_path: Path) -> None:
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
    )
    held = engine.connect()  # the pool's only connection, as if stuck on a hung database
    try:
        with pytest.raises(StoreUnavailable, match="QueuePool limit"):
            await in_transaction(engine, one)
    finally:
        held.close()
    assert await in_transaction(engine, one) == 1
    engine.dispose()


async def test_an_unreachable_database_is_store_unavailable() -> None:
    engine = sa.create_engine("sqlite:////nonexistent-dir/db.sqlite")
    with pytest.raises(StoreUnavailable):
        await in_transaction(engine, one)
    engine.dispose()
