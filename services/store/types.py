"""Column types and constructs shared by the schema and the migrations."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles

#: UTC timestamps with microseconds (TiDB's DATETIME defaults to whole seconds).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
#: Task data and results up to several MiB (BLOB stops at 64 KiB on TiDB/MySQL).
Blob = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql")
#: JSON documents stored as text, so that SQLite and TiDB behave the same.
JsonText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


class NonClusteredPrimaryKey(sa.PrimaryKeyConstraint):
    """A primary key that TiDB keeps apart from the row data.

    With a clustered key, rows are stored in key order, so time-ordered task ids would all
    land on the last region (a write hotspot). Non-clustered, rows are placed by a hidden
    row id that ``SHARD_ROW_ID_BITS`` scatters. The ``/*T! */`` comment is TiDB-only syntax
    that other MySQL servers ignore.
    """


@compiles(NonClusteredPrimaryKey, "mysql")
def _nonclustered(constraint: NonClusteredPrimaryKey, compiler: Any, **kw: Any) -> str:
    rendered: str = compiler.visit_primary_key_constraint(constraint, **kw)
    return f"{rendered} /*T![clustered_index] NONCLUSTERED */"
