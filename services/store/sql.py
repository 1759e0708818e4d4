"""Small SQL helpers shared by the repositories: UTC timestamps, upserts, chunking."""

from __future__ import annotations

import datetime as dt
import functools
import operator
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

T = TypeVar("T")

#: Rows per multi-row statement: keeps each statement well below TiDB's and MySQL's
#: packet limits for the rows we write (task data is bounded separately).
CHUNK = 500


_COMBINE = dt.datetime.combine


def to_db(value: dt.datetime | None) -> dt.datetime | None:
    """Timestamps are stored as naive UTC (DATETIME has no zone). Called for every
    timestamp of every row written, so built with ``combine``, not ``replace(tzinfo=None)``,
    which is six times slower on CPython 3.11 (the profile of a grain writing 1,667 tasks
    a second had this function at 7 % of the scheduler's samples)."""
    if value is None:
        return None
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return _COMBINE(value.date(), value.time())  # ``time()`` drops the zone


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

    One statement run as an executemany: pymysql rewrites it into multi-row
    ``INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE`` batches, so a flush costs a
    few round trips, not one per task. On MySQL/TiDB the rows skip SQLAlchemy's statement
    machinery (``insert_rows``).
    """
    if not rows:
        return
    if conn.dialect.name == "mysql":
        insert_rows(conn, table, rows, update=update)
        return
    conn.execute(
        _upsert_statement(conn.dialect.name, table, tuple(keys), tuple(update)), list(rows)
    )


def insert_rows(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    update: Sequence[str] = (),
) -> None:
    """A multi-row INSERT (with ``ON DUPLICATE KEY UPDATE`` of ``update``) of rows that all
    have the same keys: the hot writes of the grains (admission, flush, schedule firing).

    Profiled (py-spy, bench-schedules at 5,000 runs a second): the scheduler was bound by
    its own Python, not by TiDB. SQLAlchemy's per-row parameter processing for a compiled
    ``insert()`` and pymysql's escaping of named parameters and datetimes took most of the
    store threads' time, and the GIL it holds. Here the SQL text is built once per shape,
    the rows go as tuples in the driver's own paramstyle, and timestamps as text
    (``DATETIME(6)`` parses it). Other dialects take SQLAlchemy's path.
    """
    if not rows:
        return
    if conn.dialect.name != "mysql":
        if update:
            raise NotImplementedError("insert_rows updates on MySQL/TiDB only; use upsert")
        conn.execute(sa.insert(table), list(rows))
        return
    columns = tuple(rows[0])
    statement = _insert_text(table, columns, tuple(update))
    values = operator.itemgetter(*columns)
    if len(columns) == 1:
        params = [(_driver_value(values(row)),) for row in rows]
    else:
        params = [tuple(map(_driver_value, values(row))) for row in rows]
    conn.exec_driver_sql(statement, params)


@functools.lru_cache(maxsize=64)
def _insert_text(table: sa.Table, columns: tuple[str, ...], update: tuple[str, ...]) -> str:
    """The statement's text. Every name is one of the table's own columns (checked), never
    a value: values go as parameters."""
    unknown = set(columns + update) - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    names = ", ".join(f"`{name}`" for name in columns)
    marks = ", ".join("%s" for _ in columns)
    text = f"INSERT INTO `{table.name}` ({names}) VALUES ({marks})"  # noqa: S608 (names checked)
    if update:
        sets = ", ".join(f"`{name}` = VALUES(`{name}`)" for name in update)
        text += f" ON DUPLICATE KEY UPDATE {sets}"
    return text


def delete_keys(
    conn: sa.Connection,
    table: sa.Table,
    *,
    where: Mapping[str, Any],
    columns: Sequence[str],
    keys: Sequence[Sequence[Any]],
) -> None:
    """Delete the rows matching ``where`` whose ``columns`` hold one of ``keys``: one
    ``(a, b) IN ((..), ..)`` statement per chunk. On MySQL/TiDB its text is built once per
    shape and the keys go as driver parameters (``insert_rows``): the profile of a grain
    ending 1,667 timers a second showed SQLAlchemy building an ``OR`` of ``AND``s per
    chunk taking 15 % of the scheduler's samples."""
    if not keys:
        return
    fixed = tuple(where)
    unknown = set(fixed) | set(columns)
    unknown -= set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    for chunk in chunks(keys):
        if conn.dialect.name == "mysql":
            row = "(" + ", ".join("%s" for _ in columns) + ")"
            text = (
                f"DELETE FROM `{table.name}` WHERE "  # noqa: S608 (names checked)
                + "".join(f"`{name}` = %s AND " for name in fixed)
                + "("
                + ", ".join(f"`{name}`" for name in columns)
                + ") IN ("
                + ", ".join(row for _ in chunk)
                + ")"
            )
            params = [_driver_value(where[name]) for name in fixed]
            for key in chunk:
                params.extend(map(_driver_value, key))
            conn.exec_driver_sql(text, tuple(params))
        else:
            conn.execute(
                sa.delete(table).where(
                    *(table.c[name] == value for name, value in where.items()),
                    sa.tuple_(*(table.c[name] for name in columns)).in_(
                        [tuple(key) for key in chunk]
                    ),
                )
            )


#: Per engine: whether a duplicate key fails the statement (True) or only the commit.
_AT_ONCE: weakref.WeakKeyDictionary[sa.Engine, bool] = weakref.WeakKeyDictionary()


def duplicates_fail_at_once(conn: sa.Connection) -> bool:
    """Whether a duplicate key fails the INSERT statement itself, so that a savepoint can
    catch it: MySQL always; TiDB in pessimistic mode with its in-place check (both its
    defaults), not in optimistic mode, where the commit would fail instead. Asked once per
    engine. False on other dialects."""
    if conn.dialect.name != "mysql":
        return False
    known = _AT_ONCE.get(conn.engine)
    if known is None:
        version = str(conn.exec_driver_sql("SELECT VERSION()").scalar_one())
        known = True
        if "tidb" in version.lower():
            mode, check = conn.exec_driver_sql(
                "SELECT @@tidb_txn_mode, @@tidb_constraint_check_in_place_pessimistic"
            ).one()
            known = str(mode).lower() == "pessimistic" and str(check).upper() in ("1", "ON")
        _AT_ONCE[conn.engine] = known
    return known


def _driver_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    return value


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
