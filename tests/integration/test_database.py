"""SQLAlchemy + pymysql on tidb-server, and the same code on SQLite."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)


def test_tidb_version(tidb_url: str) -> None:
    engine = sa.create_engine(tidb_url)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT tidb_version()")).scalar_one()
    engine.dispose()
    assert "Store: unistore" in version


def test_round_trip(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    rows = [{"id": f"task-{i}", "payload": bytes([i]) * 100} for i in range(50)]
    with engine.begin() as conn:
        conn.execute(items.insert(), rows)
    with engine.connect() as conn:
        got = conn.execute(sa.select(items).order_by(items.c.id)).all()
        count = conn.execute(sa.select(sa.func.count()).select_from(items)).scalar_one()
    engine.dispose()
    assert count == 50
    assert {(r.id, r.payload) for r in got} == {(r["id"], r["payload"]) for r in rows}
