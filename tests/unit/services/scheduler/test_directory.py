"""The scheduler's pipeline directory: worker tokens cached, bounded, and kept through a
database outage; workers sent to the owner of the pipeline's shard."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from actors.pipeline.ports import StoreUnavailable
from services.kafka.revocations import MemoryRevocations
from services.placement import shard_of
from services.scheduler.directory import PipelineDirectory
from services.store import migrate
from services.store.control import ControlStore, TokenDigests
from services.store.schema import grain_owners
from services.store.shard_offsets import shard_key
from services.store.tokens import TokenCipher
from tests.fixtures.rows import insert_pipeline

TOKEN = "wst_secret"


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    insert_pipeline(
        engine, "p1", token=TOKEN, live_name="p", chart="./c", partitions=2, retention_s=60, shard=0
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


async def test_a_rotated_token_is_accepted_for_its_grace_period_only(engine: sa.Engine) -> None:
    """Also from the cache: its grace period is checked on each call, never stretched."""
    store = ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    pipeline = store.pipeline_by_id("p1")
    assert pipeline is not None
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    store._clock = lambda: now
    wall = [now]
    directory = PipelineDirectory(
        engine=engine, window_tasks=10, token_ttl_s=3600, wall_clock=lambda: wall[0]
    )
    assert await directory.authenticate("p1", TOKEN)  # cached before the rotation
    _, new = store.rotate_worker_token(pipeline, grace=dt.timedelta(seconds=30))
    # The new token is not in the cached digests: looked up again (after _REREAD_S).
    directory._tokens["p1"] = dataclasses.replace(directory._tokens["p1"], read_at=-10.0)
    assert await directory.authenticate("p1", new)
    assert await directory.authenticate("p1", TOKEN)
    wall[0] = now + dt.timedelta(seconds=31)
    assert not await directory.authenticate("p1", TOKEN)
    assert await directory.authenticate("p1", new)
    database_gone(engine)
    assert await directory.authenticate("p1", new)  # kept through an outage, as before
    assert not await directory.authenticate("p1", TOKEN)


@pytest.fixture
def store(engine: sa.Engine) -> ControlStore:
    return ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))


def rotate_now(store: ControlStore) -> None:
    """Rotate p1's token with no grace: the old one is revoked at once."""
    pipeline = store.pipeline_by_id("p1")
    assert pipeline is not None
    store.rotate_worker_token(pipeline, grace=dt.timedelta(0))


async def test_an_announced_rotation_refuses_the_old_token_before_the_cache_expires(
    engine: sa.Engine, store: ControlStore
) -> None:
    """The cached digests still call the old token current; the rotation heard on
    ``wsched.revocations`` drops them, and nothing is left to answer an outage with."""
    revocations = MemoryRevocations()
    directory = PipelineDirectory(engine=engine, window_tasks=10, token_ttl_s=3600)
    following = asyncio.create_task(revocations.follow_rotations(directory.forget_token))
    await asyncio.sleep(0)
    assert await directory.authenticate("p1", TOKEN)
    rotate_now(store)
    assert await directory.authenticate("p1", TOKEN)  # cached: what the announcement ends
    await revocations.announce_rotation("p1")
    assert not await directory.authenticate("p1", TOKEN)
    await revocations.announce_rotation("p1")
    database_gone(engine)
    with pytest.raises(StoreUnavailable):  # retried by the workers, neither let in nor refused
        await directory.authenticate("p1", TOKEN)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)


async def test_digests_read_before_an_announced_rotation_answer_one_check_only(
    engine: sa.Engine, store: ControlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of the old digests still in flight when the rotation is heard must not be
    cached for the cache's lifetime."""
    directory = PipelineDirectory(engine=engine, window_tasks=10, token_ttl_s=3600)
    read, done, release = directory._digests.get, asyncio.Event(), asyncio.Event()

    async def read_then_wait(pipeline_id: str) -> TokenDigests | None:
        digests = await read(pipeline_id)
        done.set()
        await release.wait()
        return digests

    monkeypatch.setattr(directory._digests, "get", read_then_wait)
    checking = asyncio.create_task(directory.authenticate("p1", TOKEN))
    await done.wait()
    rotate_now(store)
    directory.forget_token("p1")
    release.set()
    assert await checking  # answered with what it read
    assert not await directory.authenticate("p1", TOKEN)


async def test_workers_are_sent_to_the_owner_of_the_pipelines_shard(engine: sa.Engine) -> None:
    """A shared pipeline's grain stays inactive on its shard's new owner until it has
    work: its own row still names the replica that last activated it."""
    directory = PipelineDirectory(engine=engine, window_tasks=10)
    assert await directory.owner_address("p1") is None
    now = dt.datetime(2026, 11, 26)
    with engine.begin() as conn:
        conn.execute(
            grain_owners.insert().values(grain_id="p1/0", epoch=3, owner="old:1", updated_at=now)
        )
    assert await directory.owner_address("p1") == "old:1"  # no shard owner known
    with engine.begin() as conn:
        conn.execute(
            grain_owners.insert().values(
                grain_id=shard_key(shard_of("p1")), epoch=1, owner="new:2", updated_at=now
            )
        )
    assert await directory.owner_address("p1") == "new:2"


async def test_a_shards_owner_is_read_once_for_many_redirects_until_it_is_stale(
    engine: sa.Engine,
) -> None:
    directory = PipelineDirectory(engine=engine, window_tasks=10, owner_ttl_s=0.2)
    now = dt.datetime(2026, 11, 26)
    with engine.begin() as conn:
        conn.execute(
            grain_owners.insert().values(
                grain_id=shard_key(shard_of("p1")), epoch=1, owner="a:1", updated_at=now
            )
        )
    assert await directory.owner_address("p1") == "a:1"
    with engine.begin() as conn:  # the shard moves at a rebalance
        conn.execute(
            grain_owners.update()
            .where(grain_owners.c.grain_id == shard_key(shard_of("p1")))
            .values(epoch=2, owner="b:2")
        )
    assert await directory.owner_address("p1") == "a:1"  # cached
    await asyncio.sleep(0.25)
    assert await directory.owner_address("p1") == "b:2"


async def test_readiness_asked_for_many_pipelines_at_once_answers_each(
    engine: sa.Engine,
) -> None:
    insert_pipeline(engine, "p2", state="deleting")
    insert_pipeline(engine, "p3", topic="shared")
    directory = PipelineDirectory(engine=engine, window_tasks=10)
    hosted = await asyncio.gather(
        *(directory.ready_pipeline(p) for p in ("p1", "p2", "p3", "no-such-pipeline"))
    )
    assert [(h.partitions, h.shared) if h else None for h in hosted] == [
        (2, False),
        None,
        (1, True),
        None,
    ]
