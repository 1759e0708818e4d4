"""Apply the schema migrations to a database (TiDB or SQLite)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def create_database(url: str) -> None:
    """Create the URL's database on a MySQL-protocol server (TiDB) if it does not exist."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "mysql" or not parsed.database:
        return
    server = sa.create_engine(parsed.set(database=""))
    try:
        with server.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`"))
    finally:
        server.dispose()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    with sa.create_engine("sqlite://").connect() as connection:
        head = ScriptDirectory.from_config(_config(connection)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


def is_tidb(connection: sa.Connection) -> bool:
    if connection.dialect.name != "mysql":
        return False
    version = connection.execute(sa.text("SELECT VERSION()")).scalar_one()
    return "TiDB" in str(version)
