"""What every part of the control store shares: the engine, the clock and the token cipher.

Each section of :class:`~services.store.control.ControlStore` (tenants, applications,
pipelines, counters and tasks) is a class of its own module built on this one, so that a
section can be read, and grow, without the others; the store is their union.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from services.store.records import NameTaken, utcnow
from services.store.sql import to_db
from services.store.tokens import TokenCipher


class StoreBase:
    def __init__(
        self,
        *,
        engine: sa.Engine,
        clock: Callable[[], dt.datetime] = utcnow,
        cipher: TokenCipher | None = None,
    ) -> None:
        """``cipher`` encrypts the worker tokens of new pipelines for deployers; without
        one, tokens are kept as digests only and :meth:`worker_token` cannot answer."""
        self._engine = engine
        self._clock = clock
        self._cipher = cipher

    def _now(self) -> dt.datetime | None:
        return to_db(self._clock())

    def _grace_end(self, grace: dt.timedelta) -> dt.datetime | None:
        """Until when a rotated-out key or token stays valid; None: it does not."""
        return self._clock() + grace if grace > dt.timedelta(0) else None

    def _insert_named(self, table: sa.Table, row: Mapping[str, Any], *, taken: str) -> None:
        """Insert a row whose name is unique in its scope; a name in use is NameTaken."""
        try:
            with self._engine.begin() as conn:
                conn.execute(table.insert().values(row))
        except sa.exc.IntegrityError as err:
            raise NameTaken(taken) from err
