"""Which grains hold schedules other than the store's: the replica's one check for all.

A grain learns of a schedule's change from the ``ScheduleChanged`` record the API
produces; in case one was never produced, the replica compares, every 30 s, the versions
its grains published with the stored ones, read for all its pipelines in one statement
(per 500 pipelines), and tells the grains that differ (an idle pipeline's grain does not
read its own every 30 s).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

from actors.pipeline.model import GrainKey, GrainSnapshot

log = logging.getLogger("wsched.scheduler.schedules")

Versions = Mapping[str, int]


def differing(
    pipelines: Iterable[str],
    stored: Mapping[str, Versions],
    snapshots: Mapping[GrainKey, GrainSnapshot],
    resting: Collection[str] = (),
) -> dict[str, Versions]:
    """The pipelines whose grain must read its schedules, with the stored versions.
    ``resting``: pipelines whose grain rests with a wake-up (it reads its schedules when
    woken, and the API makes it due at once when one changes)."""
    told: dict[str, Versions] = {}
    for pipeline_id in pipelines:
        snapshot = snapshots.get(GrainKey(pipeline_id=pipeline_id))
        theirs = stored.get(pipeline_id, {})
        if snapshot is None:
            # Not active, or not published yet: told only if schedules are stored and no
            # wake-up will activate it to fire them (telling activates it).
            differs = bool(theirs) and pipeline_id not in resting
        else:
            held = snapshot.schedule_versions
            differs = held is not None and dict(held) != dict(theirs)
        if differs:
            told[pipeline_id] = theirs
    return told


async def every(period_s: float, check: Callable[[], Awaitable[int]]) -> None:
    """Run ``check`` every ``period_s`` until cancelled; a failed pass waits for the next."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await check()
        except Exception as err:  # noqa: BLE001 - the next pass tries again
            log.warning("schedules: versions not compared now: %s: %s", type(err).__name__, err)
