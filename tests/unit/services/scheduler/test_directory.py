"""The scheduler's pipeline directory: worker tokens cached, bounded, and kept through a
database outage."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from actors.pipeline.ports import StoreUnavailable
from services.scheduler.directory import PipelineDirectory
from services.store import migrate
from services.store.schema import pipelines

TOKEN = "wst_secret"


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    now = dt.datetime(2026, 11, 26)
    with engine.begin() as conn:
        conn.execute(
            pipelines.insert().values(
                id="p1",
                tenant_id="t",
                application_id="a",
                name="p",
                live_name="p",
                chart="./c",
                values_json="{}",
                partitions=2,
                scaling_json="{}",
                max_attempts=3,
                lease_timeout_s=30,
                retention_s=60,
                state="ready",
                state_reason="",
                deployment_json="{}",
                worker_token_hash=hashlib.sha256(TOKEN.encode()).hexdigest(),
                shard=0,
                created_at=now,
                updated_at=now,
            )
        )
    return engine


def database_gone(engine: sa.Engine) -> None:
    with engine.begin() as conn:  # every read now fails, as in an outage
        conn.execute(sa.text("DROP TABLE pipelines"))
        conn.execute(sa.text("DROP TABLE grain_owners"))


async def test_tokens_are_checked_against_the_stored_hash(engine: sa.Engine) -> None:
    directory = PipelineDirectory(engine=engine, window_tasks=10)
    assert await directory.authenticate("p1", TOKEN)
    assert not await directory.authenticate("p1", "wst_wrong")
    assert not await directory.authenticate("no-such-pipeline", TOKEN)


async def test_a_token_seen_before_still_answers_while_the_database_is_down(
    engine: sa.Engine,
) -> None:
    directory = PipelineDirectory(engine=engine, window_tasks=10, token_ttl_s=0)
    assert await directory.authenticate("p1", TOKEN)
    database_gone(engine)
    assert await directory.authenticate("p1", TOKEN)  # stale, but workers keep running
    with pytest.raises(StoreUnavailable):
        await directory.authenticate("p2", TOKEN)  # never seen: retry later, not refused
    with pytest.raises(StoreUnavailable):
        await directory.owner_address("p1")


async def test_made_up_pipeline_ids_cannot_grow_the_cache(engine: sa.Engine) -> None:
    directory = PipelineDirectory(engine=engine, window_tasks=10, token_cache_size=3)
    for n in range(50):
        assert not await directory.authenticate(f"made-up-{n}", TOKEN)
    assert await directory.authenticate("p1", TOKEN)
    assert len(directory._tokens) == 3 and "p1" in directory._tokens
