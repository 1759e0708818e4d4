"""One way to open the database, so every process tunes it the same way."""

from __future__ import annotations

from typing import Any

import pymysql
import sqlalchemy as sa

#: The errors that mean "the database cannot be reached now", not "this statement is
#: wrong": connecting failed or the connection went away (OperationalError,
#: InterfaceError), or every pooled connection is busy past the pool's timeout while the
#: database hangs (TimeoutError). Callers turn them into ``StoreUnavailable`` (retried,
#: or an UNAVAILABLE / 503 answer), never into an internal error.
UNREACHABLE: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


def make_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for TiDB (``mysql+pymysql://``) or SQLite.

    SQLite is shared by the API and the scheduler processes of ``wsched dev``: WAL lets
    readers run beside the writer, and the busy timeout makes a writer wait for the lock
    instead of failing at once.
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A short connect timeout turns "TiDB unreachable" into a quick, retryable error
    # instead of holding a request for pymysql's default 10 s per attempt.
    connect_args: dict[str, Any] = {"connect_timeout": 3}
    if _plain_loopback(sa.make_url(url)):
        connect_args["ssl_disabled"] = True
    engine = sa.create_engine(
        url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args, **kwargs
    )
    sa.event.listen(engine, "connect", _session_settings)
    return engine


#: How long TiDB lets one of our sessions sit idle inside a transaction before it ends
#: the session (and the transaction with it). Our transactions send their statements
#: back to back from one thread; a session idle that long belongs to a process that was
#: frozen (SIGSTOP, a long GC pause, a partition) while holding row locks. Without this
#: limit TiDB keeps those locks alive for the frozen process up to ``max-txn-ttl`` (an
#: hour), and the replica that claims the frozen one's grains waits on its fencing row
#: lock, ``innodb_lock_wait_timeout`` (50 s) after 50 s, instead of taking over.
IDLE_TRANSACTION_TIMEOUT_S = 10
_UNKNOWN_VARIABLE = 1193  # a MySQL server, which has no such setting


def _session_settings(dbapi_connection: Any, _record: Any) -> None:
    """Every session of ours, on TiDB (a MySQL server ignores what it does not know):

    - ends a transaction left idle past the limit above;
    - does not look for SQL plan bindings. TiDB normalises the text of every statement
      to look one up, and ours are long multi-row writes: a CPU profile of tidb-server
      under ``wsched bench`` put 9 % of its CPU there. With the lookup and without it,
      alternated twice, TiDB's CPU per 1,000 paced tasks went from 0.215 and 0.231 to
      0.183 and 0.191 seconds. Our statements are few and generated; a binding made for one of them
      is ignored.
    """
    cursor = dbapi_connection.cursor()
    try:
        for statement in (
            f"SET SESSION tidb_idle_transaction_timeout = {IDLE_TRANSACTION_TIMEOUT_S}",
            "SET SESSION tidb_use_plan_baselines = OFF",
        ):
            try:
                cursor.execute(statement)
            except pymysql.err.MySQLError as err:
                if err.args[0] != _UNKNOWN_VARIABLE:
                    raise
    finally:
        cursor.close()


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _plain_loopback(url: sa.URL) -> bool:
    """A database on this machine with no TLS options asked for. pymysql otherwise tries
    TLS on every connection ("preferred" mode) and builds a TLS context for it first, even
    when the server offers none: measured against tidb-server on this machine, 28 ms per
    connection instead of 0.7 ms. Over loopback TLS protects nothing; a URL that names TLS
    options (``ssl_ca``, ...) keeps them, and remote servers keep pymysql's default."""
    return url.host in _LOOPBACK and not any(key.startswith("ssl") for key in url.query)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
