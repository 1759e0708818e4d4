"""Small SQL helpers shared by the repositories: UTC timestamps, upserts, chunking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

T = TypeVar("T")

#: Rows per multi-row statement: keeps each statement well below TiDB's and MySQL's
#: packet limits for the rows we write (task data is bounded separately).
CHUNK = 500


def to_db(value: dt.datetime | None) -> dt.datetime | None:
    """Timestamps are stored as naive UTC (DATETIME has no zone)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def from_db(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC)


def from_db_required(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert ``rows`` or, where the key exists, overwrite the ``update`` columns.

    One statement, compiled once and cached, run as an executemany: pymysql rewrites it
    into multi-row ``INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE`` batches, so a
    flush costs a few round trips, not one per task.
    """
    if not rows:
        return
    conn.execute(
        _upsert_statement(conn.dialect.name, table, tuple(keys), tuple(update)), list(rows)
    )


def _upsert_statement(
    dialect: str, table: sa.Table, keys: tuple[str, ...], update: tuple[str, ...]
) -> sa.Executable:
    if dialect == "mysql":
        my = mysql.insert(table)
        return my.on_duplicate_key_update({col: my.inserted[col] for col in update})
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(
            index_elements=list(keys), set_={col: lite.excluded[col] for col in update}
        )
    raise NotImplementedError(f"upsert is not implemented for {dialect}")
