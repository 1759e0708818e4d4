"""The hot-path SQL helpers (``services/store/sql.py``) on TiDB and on SQLite: rows
written by ``insert_rows`` and removed by ``delete_keys`` are exactly the ones named."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from services.store.schema import task_timers
from services.store.sql import delete_keys, insert_rows, to_db

pytestmark = pytest.mark.integration

AT = dt.datetime(2026, 11, 27, 17, 0, 0, 250_000, tzinfo=dt.UTC)


def timers(engine: sa.Engine) -> set[tuple[str, dt.datetime, str]]:
    with engine.connect() as conn:
        return {
            (row.pipeline_id, row.due_at, row.task_id)
            for row in conn.execute(sa.select(task_timers))
        }


def test_delete_keys_removes_only_the_named_rows(engine: sa.Engine) -> None:
    rows = [
        {"pipeline_id": pipeline, "due_at": to_db(AT + dt.timedelta(seconds=i)), "task_id": f"t{i}"}
        for pipeline in ("p1", "p2")
        for i in range(1200)  # more than one chunk
    ]
    with engine.begin() as conn:
        insert_rows(conn, task_timers, rows)
    gone = [(to_db(AT + dt.timedelta(seconds=i)), f"t{i}") for i in range(0, 1200, 2)]
    gone.append((to_db(AT + dt.timedelta(seconds=1)), "t2"))  # a due time of another task
    with engine.begin() as conn:
        delete_keys(
            conn, task_timers, where={"pipeline_id": "p1"}, columns=("due_at", "task_id"), keys=gone
        )
        delete_keys(conn, task_timers, where={"pipeline_id": "p1"}, columns=("task_id",), keys=[])
    left = timers(engine)
    assert {(t, at) for p, at, t in left if p == "p1"} == {
        (f"t{i}", to_db(AT + dt.timedelta(seconds=i))) for i in range(1, 1200, 2)
    }
    assert sum(1 for p, _, _ in left if p == "p2") == 1200


def test_delete_keys_refuses_a_column_the_table_does_not_have(engine: sa.Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="no column"):
        delete_keys(conn, task_timers, where={"nope": 1}, columns=("task_id",), keys=[("t",)])


def test_to_db_is_naive_utc_whatever_the_zone() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    naive = dt.datetime(2026, 11, 27, 17, 0, 0, 250_000)
    assert to_db(AT) == naive and to_db(AT).tzinfo is None  # type: ignore[union-attr]
    assert to_db(AT.astimezone(plus_two)) == naive
    assert to_db(None) is None
