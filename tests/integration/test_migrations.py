"""The Alembic migrations on TiDB and on SQLite."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from services.infra.tidb import TidbServer
from services.store import migrate

pytestmark = pytest.mark.integration


def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    migrate.upgrade(engine)  # a second run is a no-op
    assert migrate.current_revision(engine) == migrate.head_revision()
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {
        "tenants",
        "applications",
        "pipelines",
        "tasks",
        "grain_owners",
        "grain_offsets",
        "quarantine",
        "pipeline_stats",
        "task_timers",
        "task_attempts",
    } <= tables


def test_tidb_tasks_table_is_nonclustered_sharded_and_has_a_ttl(tidb_url: str) -> None:
    engine = sa.create_engine(tidb_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        ddl = conn.execute(sa.text("SHOW CREATE TABLE tasks")).one()[1]
    engine.dispose()
    assert "NONCLUSTERED" in ddl
    assert "SHARD_ROW_ID_BITS=4" in ddl
    assert "TTL=`expire_at` + INTERVAL 0 DAY" in ddl
    assert "KEY `ix_tasks_pipeline_status_id` (`pipeline_id`,`status`,`id`)" in ddl
    engine = sa.create_engine(tidb_url)
    with engine.connect() as conn:
        history = conn.execute(sa.text("SHOW CREATE TABLE task_attempts")).one()[1]
    engine.dispose()
    assert "TTL=`expire_at` + INTERVAL 0 DAY" in history


def test_db_upgrade_creates_a_missing_tidb_database(tidb_server: TidbServer) -> None:
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    migrate.create_database(tidb_server.url(name))
    migrate.create_database(tidb_server.url(name))  # idempotent
    engine = sa.create_engine(tidb_server.url(name))
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
    admin = sa.create_engine(tidb_server.url())
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE `{name}`"))
    admin.dispose()


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "tidb_url"])
def test_results_move_into_their_task_rows(
    request: pytest.FixtureRequest, url_fixture: str
) -> None:
    """0014 copies each ``task_results`` row into its task's ``result`` (in batches, so the
    copy of a big table is more than one page) and drops the table."""
    engine = sa.create_engine(request.getfixturevalue(url_fixture))
    migrate.upgrade(engine, "0013")
    ids = [f"t{i:04d}" for i in range(2_500)]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (pipeline_id, id, attempt, status, due_at, data, "
                "data_sha256, created_at, updated_at) VALUES (:p, :i, 1, 'succeeded', "
                ":now, :d, :d, :now, :now)"
            ),
            [{"p": "p", "i": i, "d": b"x", "now": dt.datetime(2026, 1, 1)} for i in ids],
        )
        conn.execute(
            sa.text(
                "INSERT INTO task_results (pipeline_id, id, attempt, result) VALUES (:p, :i, 1, :r)"
            ),
            # every other task has a result; one of them an empty one
            [{"p": "p", "i": i, "r": i.encode() if i != "t0000" else b""} for i in ids[::2]],
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        got = {row.id: row.result for row in conn.execute(sa.text("SELECT id, result FROM tasks"))}
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert "task_results" not in tables
    assert got == {
        i: (None if n % 2 else (b"" if i == "t0000" else i.encode())) for n, i in enumerate(ids)
    }


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "tidb_url"])
def test_pipelines_made_before_the_topic_choice_keep_a_topic_of_their_own(
    request: pytest.FixtureRequest, url_fixture: str
) -> None:
    """0015 adds ``pipelines.topic``: every existing pipeline has a topic of its own, so
    it reads ``dedicated``."""
    engine = sa.create_engine(request.getfixturevalue(url_fixture))
    migrate.upgrade(engine, "0014")
    now = dt.datetime(2026, 1, 1)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO pipelines (id, tenant_id, application_id, name, live_name, chart, "
                "values_json, partitions, scaling_json, max_attempts, lease_timeout_s, "
                "retention_s, state, state_reason, deployment_json, worker_token_hash, shard, "
                "created_at, updated_at) VALUES ('p1', 't', 'a', 'p', 'p', './c', '{}', 3, "
                "'{}', 3, 30, 60, 'ready', '', '{}', 'h', 7, :now, :now)"
            ),
            {"now": now},
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        topic, partitions = conn.execute(
            sa.text("SELECT topic, partitions FROM pipelines WHERE id = 'p1'")
        ).one()
    engine.dispose()
    assert (topic, partitions) == ("dedicated", 3)
