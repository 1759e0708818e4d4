"""A tenant's backlog (queued + scheduled tasks) as this API process last read it.

The figures are the grains' counters, flushed to the database every 2 s; reading them
on every submit would put a flooding tenant's every request on the database, so each
process keeps a reading up to ``max_age_s`` old and adds the tasks it accepted since.
The bound may therefore be overshot: by what other processes accepted since the
reading, and by what was accepted but not yet admitted and flushed by the grains
(about the submit rate times 2 s of flush plus ``max_age_s``, plus one batch).

A reading past half its age is read again in the background while submits go on
against it, so a busy tenant's submits never wait for the read (timed under
``wsched bench-fairness``: 7-50 ms for the submit that met an expired reading); one
older than ``max_age_s`` (a tenant that was quiet) is read before the submit is
answered, as the first is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.quotas._errors import QuotaStoreUnavailable

log = logging.getLogger("wsched.quotas")


@dataclass(kw_only=True)
class _Reading:
    value: int = 0
    at_s: float = float("-inf")
    added: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The read under way in the background, if any.
    ahead: asyncio.Task[None] | None = None


class BacklogGauge:
    def __init__(
        self,
        *,
        read: Callable[[str], Awaitable[int]],
        clock: Callable[[], float] = time.monotonic,
        max_age_s: float = 1.0,
    ) -> None:
        self._read = read
        self._clock = clock
        self._max_age_s = max_age_s
        self._readings: dict[str, _Reading] = {}

    async def current(self, tenant_id: str) -> int:
        """The backlog: the last reading (refreshed when older than ``max_age_s``) plus
        what this process accepted since. A failed read keeps the last one (none: 0):
        the bound is not worth refusing submits that Kafka can absorb."""
        reading = self._readings.setdefault(tenant_id, _Reading())
        age = self._clock() - reading.at_s
        if age > self._max_age_s:
            async with reading.lock:
                if self._clock() - reading.at_s > self._max_age_s:
                    await self._refresh(tenant_id, reading)
        elif age > self._max_age_s / 2 and (reading.ahead is None or reading.ahead.done()):
            reading.ahead = asyncio.create_task(self._refresh_ahead(tenant_id, reading))
        return reading.value + reading.added

    async def _refresh_ahead(self, tenant_id: str, reading: _Reading) -> None:
        async with reading.lock:
            await self._refresh(tenant_id, reading)

    async def _refresh(self, tenant_id: str, reading: _Reading) -> None:
        started, added = self._clock(), reading.added
        try:
            reading.value = await self._read(tenant_id)
            # Accepted while the read ran: not in what it read (in the background, submits
            # go on meanwhile).
            reading.added -= added
        except QuotaStoreUnavailable as err:
            log.warning("backlog of tenant %s not read: %s", tenant_id, err)
        reading.at_s = started

    def added(self, tenant_id: str, count: int) -> None:
        reading = self._readings.get(tenant_id)
        if reading is not None:
            reading.added += count
