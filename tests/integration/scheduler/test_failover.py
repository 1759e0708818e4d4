"""Several scheduler replicas as processes over real Kafka and TiDB: sharing and failover.

The test workers keep an execution log of (task, lease token). The guarantees checked:
every accepted task reaches a terminal state, none is lost, and a task executed more
than once shows a distinct lease token for every execution.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa

from actors.pipeline.model import GrainKey
from services.infra import tidb
from services.infra.cache import Cache
from services.placement import shard_of
from services.store import migrate
from services.store.schema import grain_owners, tasks
from services.store.shard_offsets import shard_key
from services.worker.client import SchedulerClient
from tests.integration.scheduler.cluster import ApiProcess, ExecutionLog, Replica, run_worker
from tests.integration.scheduler.conftest import ReadyPipeline, create_ready_pipeline

pytestmark = pytest.mark.integration

Submit = Callable[[ReadyPipeline, Mapping[str, Mapping[str, object]]], Awaitable[None]]
#: Shards that any even split of the 64 shards between two replicas puts on both sides.
SPREAD_SHARDS = (0, 1, 32, 33)


@pytest.fixture
async def spread(
    engine: sa.Engine, kafka_bootstrap: str, request: pytest.FixtureRequest
) -> list[ReadyPipeline]:
    """Pipelines on shards both replicas get; on the shared topic if the test's ``topic``
    parameter says so."""
    callspec = getattr(request.node, "callspec", None)
    shared = callspec is not None and callspec.params.get("topic") == "shared"
    return [
        await create_ready_pipeline(engine, kafka_bootstrap, shard=shard, shared=shared)
        for shard in SPREAD_SHARDS
    ]


async def owners(engine: sa.Engine, pipelines: list[ReadyPipeline]) -> dict[str, str]:
    """Who owns each pipeline: its grain's fencing row, or on the shared topic its
    shard's (a shared pipeline's grain is active only while it has work)."""
    keys = {
        shard_key(shard_of(p.id)) if p.shared else str(GrainKey(pipeline_id=p.id)): p.id
        for p in pipelines
    }
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(grain_owners.c.grain_id, grain_owners.c.owner).where(
                grain_owners.c.grain_id.in_(list(keys))
            )
        ).all()
    return {keys[row.grain_id]: row.owner for row in rows}


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def wait_shared(
    engine: sa.Engine, spread: list[ReadyPipeline], replicas: list[Replica]
) -> dict[str, str]:
    """Wait until both replicas own grains; the first one up takes every shard at first."""

    async def shared() -> bool:
        hosts = set((await owners(engine, spread)).values())
        return hosts == {r.address for r in replicas}

    await wait_for(shared, timeout_s=60, what="the grains to be shared by both replicas")
    await asyncio.sleep(1)  # let the rebalance settle before picking a victim
    return await owners(engine, spread)


async def wait_succeeded(
    engine: sa.Engine, pipelines: list[ReadyPipeline], count: int, *, what: str
) -> None:
    async def done() -> bool:
        return statuses(engine, pipelines).get("succeeded", 0) == count

    await wait_for(done, timeout_s=120, what=what)


def statuses(engine: sa.Engine, pipelines: list[ReadyPipeline]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.status, sa.func.count())
            .where(tasks.c.pipeline_id.in_([p.id for p in pipelines]))
            .group_by(tasks.c.status)
        ).all()
    return {status: int(n) for status, n in rows}


@pytest.fixture
async def workers(
    replicas: list[Replica], spread: list[ReadyPipeline]
) -> AsyncIterator[ExecutionLog]:
    log, stop = ExecutionLog(), asyncio.Event()
    addresses = [r.address for r in replicas]
    running = [
        asyncio.create_task(
            run_worker(
                addresses=addresses,
                pipeline_id=p.id,
                token=p.token,
                name=f"w{i}-{p.id[:4]}",
                log=log,
                stop=stop,
            )
        )
        for p in spread
        for i in range(2)
    ]
    yield log
    stop.set()
    await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 30)


def check_execution_log(log: ExecutionLog, submitted: set[str]) -> None:
    by_task = log.tokens_by_task()
    assert set(by_task) == submitted, "some tasks never ran"
    for task_id, tokens in by_task.items():
        assert len(tokens) == len(set(tokens)), f"{task_id} ran twice under one lease token"


@pytest.mark.parametrize(
    ("write_delay_ms", "topic"),
    [(0, "dedicated"), (500, "dedicated"), (500, "shared")],
    ids=["written-at-admission", "held", "held-on-the-shared-topic"],
)
async def test_two_replicas_share_pipelines_and_survive_a_kill_9_under_load(
    replicas: list[Replica],
    spread: list[ReadyPipeline],
    engine: sa.Engine,
    submit: Submit,
    workers: ExecutionLog,
    write_delay_ms: int,
    topic: str,
) -> None:
    """With a write delay (design D2) the victim held tasks in memory that had no row,
    and its stored offsets (its grains' on a topic of their own, its shards' on the
    shared topic) stayed behind them: the survivor reads them again."""
    for replica in replicas:
        replica.settings["WSCHED_WRITE_DELAY_MS"] = str(write_delay_ms)
        replica.start()

    before = await wait_shared(engine, spread, replicas)

    submitted: set[str] = set()
    for wave in range(6):
        for p in spread:
            items = {f"{p.id[:8]}-{wave}-{i}": {"wave": wave, "i": i} for i in range(60)}
            await submit(p, items)
            submitted |= set(items)
        if wave == 2:
            victim = next(r for r in replicas if r.address == before[spread[0].id])
            victim.kill()
        await asyncio.sleep(0.5)

    await wait_succeeded(engine, spread, len(submitted), what=f"{len(submitted)} tasks to succeed")
    after = await owners(engine, spread)
    survivor = next(r for r in replicas if r is not victim)
    assert set(after.values()) == {survivor.address}
    check_execution_log(workers, submitted)
    assert statuses(engine, spread) == {"succeeded": len(submitted)}
    # The survivor served half the pipelines from the start: with the delay it held tasks
    # in memory without a row (the victim's counters died with it).
    held = survivor.counted("held")
    assert held > 0 if write_delay_ms else held == 0, held


def task_rows(engine: sa.Engine, pipelines: list[ReadyPipeline]) -> set[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                tasks.c.id,
                tasks.c.status,
                tasks.c.attempt,
                tasks.c.lease_epoch,
                tasks.c.worker,
                tasks.c.updated_at,
            ).where(tasks.c.pipeline_id.in_([p.id for p in pipelines]))
        ).all()
    return {tuple(row) for row in rows}


async def submit_waves(
    submit: Submit, pipelines: list[ReadyPipeline], waves: range, size: int = 50
) -> set[str]:
    submitted: set[str] = set()
    for wave in waves:
        for p in pipelines:
            items = {f"{p.id[:8]}-{wave}-{i}": {"wave": wave, "i": i} for i in range(size)}
            await submit(p, items)
            submitted |= set(items)
        await asyncio.sleep(0.3)
    return submitted


async def test_a_paused_ex_owner_writes_nothing_once_resumed(
    replicas: list[Replica],
    spread: list[ReadyPipeline],
    engine: sa.Engine,
    submit: Submit,
    workers: ExecutionLog,
    kafka_bootstrap: str,
) -> None:
    for replica in replicas:
        replica.start()

    before = await wait_shared(engine, spread, replicas)
    paused = next(r for r in replicas if r.address == before[spread[0].id])
    other = next(r for r in replicas if r is not paused)
    # A pipeline on the paused replica's shard that no background worker serves: the grant
    # made just before the pause is an unflushed change the ex-owner will try to write.
    held = await create_ready_pipeline(engine, kafka_bootstrap, shard=SPREAD_SHARDS[0])
    await submit(held, {"held": {"n": 1}})
    submitted = await submit_waves(submit, spread, range(2))
    client = SchedulerClient(
        addresses=[paused.address], pipeline_id=held.id, token=held.token, worker="holder"
    )
    try:
        async with asyncio.timeout(60):
            while not (await client.poll(max_tasks=1, wait_ms=2000)).tasks:
                pass
    finally:
        await client.close()
    paused.pause()  # well within its 2 s flush interval: the grant is not yet in the store
    submitted |= await submit_waves(submit, spread, range(2, 4))

    async def moved() -> bool:
        return set((await owners(engine, [*spread, held])).values()) == {other.address}

    await wait_for(moved, timeout_s=60, what="the paused replica's grains to move")

    await wait_succeeded(
        engine, spread, len(submitted), what="every task to succeed on the new owner"
    )
    snapshot = task_rows(engine, [*spread, held])
    paused.resume()
    await asyncio.sleep(6)  # several flush intervals of the resumed ex-owner
    assert task_rows(engine, [*spread, held]) == snapshot, "the ex-owner changed task rows"
    assert "lost ownership" in paused.log(), "the ex-owner never tried its stale write"
    check_execution_log(workers, submitted)


async def test_restarting_every_replica_recovers_from_the_store_and_kafka(
    replicas: list[Replica],
    spread: list[ReadyPipeline],
    engine: sa.Engine,
    submit: Submit,
    workers: ExecutionLog,
) -> None:
    for replica in replicas:
        replica.start()
    submitted = await submit_waves(submit, spread, range(2))
    for replica in replicas:
        replica.stop()
    submitted |= await submit_waves(submit, spread, range(2, 4))  # Kafka keeps them
    for replica in replicas:
        replica.start()  # same stable names: static membership takes the shards back

    await wait_succeeded(
        engine, spread, len(submitted), what="every task to succeed after the restart"
    )
    check_execution_log(workers, submitted)


@pytest.fixture
async def own_tidb(infra_cache: Cache, tmp_path: Path) -> AsyncIterator[tidb.TidbServer]:
    """A tidb-server of this test alone, with its data on disk so it survives a stop."""
    server = tidb.TidbServer(binary=tidb.provision(infra_cache), data_dir=tmp_path / "tidb")
    server.start()
    yield server
    server.stop()


async def test_tidb_down_for_20_s_under_load_loses_nothing(
    own_tidb: tidb.TidbServer, kafka_bootstrap: str, kafka_group: str, tmp_path: Path
) -> None:
    """Submissions go through the real API, which keeps accepting them from its memory of
    the tenant and pipeline while TiDB is away; Kafka holds them until it is back."""
    admin = sa.create_engine(own_tidb.url())
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE DATABASE wsched"))
    admin.dispose()
    url = own_tidb.url("wsched")
    engine = sa.create_engine(url, pool_pre_ping=True)
    migrate.upgrade(engine)
    replica = Replica(
        name=f"replica-{uuid.uuid4().hex[:6]}",
        kafka_bootstrap=kafka_bootstrap,
        database_url=url,
        group=kafka_group,
        log_dir=tmp_path,
    )
    replica.start()
    api = ApiProcess(kafka_bootstrap=kafka_bootstrap, database_url=url, log_dir=tmp_path)
    api.start()
    log, stop = ExecutionLog(), asyncio.Event()
    worker: asyncio.Task[None] | None = None
    try:
        async with api.tenant_client() as http:
            pipeline = await api.create_pipeline(http, name="outage")
            worker = asyncio.create_task(
                run_worker(
                    addresses=[replica.address],
                    pipeline_id=pipeline.id,
                    token=pipeline.token,
                    name="w",
                    log=log,
                    stop=stop,
                )
            )
            submitted = await api.submit_waves(http, pipeline, range(3))
            own_tidb.stop()
            started = asyncio.get_running_loop().time()
            submitted |= await api.submit_waves(http, pipeline, range(3, 10), size=40)
            await asyncio.sleep(max(0.0, 20 - (asyncio.get_running_loop().time() - started)))
            own_tidb.start()

        await wait_succeeded(
            engine, [pipeline], len(submitted), what="every task to succeed after TiDB returns"
        )
        check_execution_log(log, submitted)
    finally:
        stop.set()
        if worker is not None:
            await asyncio.wait_for(asyncio.gather(worker, return_exceptions=True), 30)
        api.stop()
        replica.stop()
        engine.dispose()
