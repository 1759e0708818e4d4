"""A process frozen inside a transaction (SIGSTOP, a long pause, a partition) holds its
grain's fencing-row lock: on TiDB the session is ended once it sits idle in that
transaction, so the replica taking the grain over waits seconds, not ``max-txn-ttl``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from actors.pipeline.model import GrainKey
from services.store import engine as engines
from services.store import migrate
from services.store.fencing import fence
from services.store.tasks import SqlTaskStore
from tests.ports.task_store import NOW

pytestmark = pytest.mark.integration

IDLE_S = 2


@pytest.fixture
def engine(tidb_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    monkeypatch.setattr(engines, "IDLE_TRANSACTION_TIMEOUT_S", IDLE_S)
    engine = engines.make_engine(tidb_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def test_every_session_carries_the_idle_transaction_limit(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        limit = conn.execute(sa.text("SELECT @@tidb_idle_transaction_timeout")).scalar_one()
        baselines = conn.execute(sa.text("SELECT @@tidb_use_plan_baselines")).scalar_one()
    assert int(limit) == IDLE_S
    assert int(baselines) == 0  # no lookup of plan bindings for our statements


async def test_a_claim_takes_over_from_a_frozen_holder_of_the_fencing_row(
    engine: sa.Engine,
) -> None:
    grain = GrainKey(pipeline_id="p-frozen")
    store = SqlTaskStore(engine=engine, clock=lambda: NOW)
    epoch = await store.claim(grain=grain, owner="frozen")
    frozen = engine.connect()
    held = frozen.begin()
    fence(frozen, grain=grain, epoch=epoch, now=NOW)  # locks the row; then it freezes

    started = time.monotonic()
    taken = await asyncio.wait_for(store.claim(grain=grain, owner="survivor"), timeout=30)
    waited = time.monotonic() - started

    assert taken == epoch + 1
    assert IDLE_S <= waited < IDLE_S + 8, f"the claim waited {waited:.1f} s"
    with pytest.raises(sa.exc.OperationalError):  # thawed: its session is gone
        held.commit()
    frozen.close()
