"""The store's tests run each against TiDB and against SQLite (``database_url``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from services.store import migrate


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An empty database at the schema's head."""
    engine = sa.create_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()
