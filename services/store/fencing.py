"""Fencing rows and the transactions around them.

Every write of a grain (or of a shard's offset) runs in one transaction that first checks
the epoch of its fencing row in ``grain_owners``: an ex-owner that was paused while its
grain moved finds the epoch changed and writes nothing. Claiming a row takes its next
epoch. SQLAlchemy here is synchronous (pymysql); transactions run in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import sqlalchemy as sa

from actors.pipeline.model import GrainKey
from actors.pipeline.ports import StaleEpoch, StoreUnavailable
from services.store.engine import UNREACHABLE
from services.store.schema import grain_owners
from services.store.sql import chunks, to_db

R = TypeVar("R")
#: An item of a batch of many grains' (``together``).
F = TypeVar("F", bound="Fenced")
log = logging.getLogger("wsched.store.fencing")


def fence(conn: sa.Connection, *, grain: GrainKey, epoch: int, now: dt.datetime) -> None:
    """Fail with StaleEpoch unless ``epoch`` is still the grain's; locks the owner row."""
    fence_key(conn, key=str(grain), epoch=epoch, now=now)


def fence_key(conn: sa.Connection, *, key: str, epoch: int, now: dt.datetime) -> None:
    """``fence`` for any fencing row: a grain's, or a shard's (``shard:<n>``)."""
    touched = conn.execute(
        sa.update(grain_owners)
        .where(grain_owners.c.grain_id == key, grain_owners.c.epoch == epoch)
        .values(updated_at=to_db(now))
    )
    if touched.rowcount != 1:
        raise StaleEpoch(f"{key} is no longer at epoch {epoch}")


def fence_many(conn: sa.Connection, pairs: Sequence[tuple[str, int]], *, now: dt.datetime) -> None:
    """``fence_key`` for many fencing rows in one statement per chunk; StaleEpoch if any
    of them moved on (which one is not told: the caller fences them one by one then)."""
    wanted = list(dict.fromkeys(pairs))
    for chunk in chunks(wanted):
        touched = conn.execute(
            sa.update(grain_owners)
            .where(sa.tuple_(grain_owners.c.grain_id, grain_owners.c.epoch).in_(chunk))
            .values(updated_at=to_db(now))
        )
        if touched.rowcount != len(chunk):
            raise StaleEpoch(f"{len(chunk) - touched.rowcount} of {len(chunk)} grains moved on")


#: A claim activates the grain: its wake-up row, if it rested, is done with.
_AWAKE = {"wake_at": None, "shard": None}


def set_wake(conn: sa.Connection, *, grain: GrainKey, shard: int, wake_at: dt.datetime) -> None:
    """Write the wake-up of a grain that deactivates with timers or schedules. Run after
    its fencing row was checked (``fence_all``) in the same transaction: a grain claimed
    elsewhere since writes nothing (that one writes its own when it rests)."""
    conn.execute(
        sa.update(grain_owners)
        .where(grain_owners.c.grain_id == str(grain))
        .values(shard=shard, wake_at=to_db(wake_at))
    )


class Fenced(Protocol):
    """A grain's item of a batch: checked against its fencing row before it runs."""

    @property
    def grain(self) -> GrainKey: ...

    @property
    def epoch(self) -> int: ...

    @property
    def now(self) -> dt.datetime: ...


def fence_all(conn: sa.Connection, items: Sequence[Fenced]) -> None:
    """``fence`` every item's grain, in one statement for many (``fence_many``)."""
    if len(items) == 1:
        fence(conn, grain=items[0].grain, epoch=items[0].epoch, now=items[0].now)
    else:
        fence_many(conn, [(str(i.grain), i.epoch) for i in items], now=items[-1].now)


def claim_key(conn: sa.Connection, *, key: str, owner: str, now: dt.datetime) -> int:
    """Take the fencing row ``key`` with the next epoch (the first is 1) and return it.
    Two first claims at once: one insert fails with IntegrityError; retry."""
    bumped = conn.execute(
        sa.update(grain_owners)
        .where(grain_owners.c.grain_id == key)
        .values(epoch=grain_owners.c.epoch + 1, owner=owner, updated_at=to_db(now), **_AWAKE)
    )
    if bumped.rowcount == 0:
        conn.execute(
            sa.insert(grain_owners).values(
                grain_id=key, epoch=1, owner=owner, updated_at=to_db(now)
            )
        )
    return int(
        conn.execute(
            sa.select(grain_owners.c.epoch).where(grain_owners.c.grain_id == key)
        ).scalar_one()
    )


def claim_keys(
    conn: sa.Connection, *, keys: Sequence[str], owner: str, now: dt.datetime
) -> dict[str, int]:
    """``claim_key`` for many fencing rows at once: one update, one read, and one insert
    of the rows claimed for the first time. Their epochs by key."""
    epochs: dict[str, int] = {}
    for chunk in chunks(list(keys)):
        conn.execute(
            sa.update(grain_owners)
            .where(grain_owners.c.grain_id.in_(chunk))
            .values(epoch=grain_owners.c.epoch + 1, owner=owner, updated_at=to_db(now), **_AWAKE)
        )
        epochs.update(
            (key, int(epoch))
            for key, epoch in conn.execute(
                sa.select(grain_owners.c.grain_id, grain_owners.c.epoch).where(
                    grain_owners.c.grain_id.in_(chunk)
                )
            )
        )
        first = [key for key in chunk if key not in epochs]
        if first:
            conn.execute(
                sa.insert(grain_owners),
                [
                    {"grain_id": k, "epoch": 1, "owner": owner, "updated_at": to_db(now)}
                    for k in first
                ],
            )
            epochs.update((key, 1) for key in first)
    return epochs


async def in_transaction(engine: sa.Engine, fn: Callable[[sa.Connection], R]) -> R:
    """Run ``fn`` in one transaction in a worker thread; a database that cannot be reached
    (or went away mid-way) is ``StoreUnavailable``."""

    def run() -> R:
        with engine.begin() as conn:
            return fn(conn)

    try:
        return await asyncio.to_thread(run)
    except UNREACHABLE as err:
        raise StoreUnavailable(str(getattr(err, "orig", None) or err)) from err


async def claim_fenced(engine: sa.Engine, fn: Callable[[sa.Connection], R], *, what: str) -> R:
    """``in_transaction`` for a claim (``claim_key`` in ``fn``): two first claims of one
    row at once make one insert fail, which is tried again."""
    for _ in range(3):
        try:
            return await in_transaction(engine, fn)
        except sa.exc.IntegrityError:
            continue  # another replica inserted the first row at the same moment
    raise StoreUnavailable(f"could not claim {what}: repeated conflicts")


async def together(
    engine: sa.Engine,
    items: Sequence[F],
    fn: Callable[[sa.Connection, Sequence[F]], Sequence[object]],
    *,
    what: str,
) -> list[object | Exception]:
    """``fn`` over many grains' items (it fences them: ``fence_all``) in one transaction,
    an outcome per item. If that fails (one of them was fenced, say), each runs on its
    own, so that it fails alone; a database that cannot be reached fails them all (each
    caller retries)."""
    if len(items) == 1:
        return list(await in_transaction(engine, lambda conn: fn(conn, items)))
    try:
        return list(await in_transaction(engine, lambda conn: fn(conn, items)))
    except StoreUnavailable as err:
        return [err] * len(items)
    except Exception:  # noqa: BLE001 - tried again one by one, which says whose it was
        log.info("a batch of %d %s failed; each on its own", len(items), what)
    outcomes: list[object | Exception] = []
    for item in items:
        try:
            outcomes.append((await together(engine, [item], fn, what=what))[0])
        except Exception as err:  # noqa: BLE001 - this item's own failure
            outcomes.append(err)
    return outcomes
