"""The submit rate, held across API processes: one bucket per tenant, shared, drawn in slices.

The bucket lives in the database (one row per tenant, see ``services.store``), because
an operator who sets "1,000 tasks a second" means it for the tenant, not for each of the
API processes a load balancer spreads it over. A database round trip per submit would
put every submit of a flooding tenant on the database, so each process draws a slice
(a tenth of a second of the rate) at a time and spends it locally; tokens it has not
spent within ``hold_s`` are dropped, so the processes together never exceed the rate.
While the bucket's store is unreachable, each process falls back on a bucket of its own
(the rate then holds per process) rather than refusing every submit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from services.quotas._bucket import BucketState, Draw, draw, full
from services.quotas._errors import QuotaStoreUnavailable
from services.quotas._policy import Quotas

log = logging.getLogger("wsched.quotas")


class SharedBuckets(Protocol):
    """Tenants' submit buckets as every API process sees them."""

    async def draw(
        self, tenant_id: str, *, rate: float, burst: int, now_s: float, need: int, want: int
    ) -> Draw: ...


class MemoryBuckets:
    """Buckets in this process only: the unit tests' twin, and the fallback while the
    shared store is unreachable."""

    def __init__(self) -> None:
        self.states: dict[str, BucketState] = {}

    async def draw(
        self, tenant_id: str, *, rate: float, burst: int, now_s: float, need: int, want: int
    ) -> Draw:
        state = self.states.get(tenant_id) or full(burst=burst, now_s=now_s)
        result = draw(state, rate=rate, burst=burst, now_s=now_s, need=need, want=want)
        self.states[tenant_id] = result.state
        return result


@dataclass(kw_only=True)
class _Local:
    """What this process holds of one tenant's bucket."""

    tokens: int = 0
    #: When unspent tokens are dropped (monotonic seconds).
    expires_s: float = 0.0
    #: Until when the shared bucket is known to be too low (monotonic seconds).
    empty_until_s: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SubmitLimiter:
    def __init__(
        self,
        *,
        shared: SharedBuckets,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        slice_s: float = 0.1,
        hold_s: float = 1.0,
    ) -> None:
        self._shared = shared
        self._fallback = MemoryBuckets()
        self._clock = clock
        self._wall = wall
        self._slice_s = slice_s
        self._hold_s = hold_s
        self._locals: dict[str, _Local] = {}

    async def acquire(self, tenant_id: str, quotas: Quotas, count: int) -> float:
        """Spend ``count`` tokens of the tenant's bucket: 0.0 when granted, else the
        seconds until they could be (nothing is spent then)."""
        rate = quotas.submit_rate
        if rate is None or count <= 0:
            return 0.0
        local = self._locals.setdefault(tenant_id, _Local())
        async with local.lock:
            now = self._clock()
            if now >= local.expires_s:
                local.tokens = 0
            if local.tokens >= count:
                local.tokens -= count
                return 0.0
            if now < local.empty_until_s:
                return local.empty_until_s - now
            need = count - local.tokens
            burst = quotas.burst()
            want = max(need, min(burst, math.ceil(rate * self._slice_s)))
            result = await self._draw(tenant_id, rate=rate, burst=burst, need=need, want=want)
            if result.granted == 0:
                local.empty_until_s = now + result.wait_s
                return result.wait_s
            local.tokens += result.granted - count
            local.expires_s = now + self._hold_s
            return 0.0

    def known_empty(self, tenant_id: str) -> float:
        """Seconds until the tenant's shared bucket can grant again, as far as this
        process knows without asking (0.0: not known to be empty); spends nothing."""
        local = self._locals.get(tenant_id)
        if local is None or local.tokens > 0:
            return 0.0
        return max(0.0, local.empty_until_s - self._clock())

    def refund(self, tenant_id: str, count: int) -> None:
        """Give back tokens of a submit refused after it was granted (kept here, for the
        tenant's next submits within the hold)."""
        local = self._locals.get(tenant_id)
        if local is not None and count > 0:
            local.tokens += count
            local.expires_s = max(local.expires_s, self._clock() + self._hold_s)

    async def _draw(self, tenant_id: str, *, rate: float, burst: int, need: int, want: int) -> Draw:
        now_s = self._wall()
        try:
            return await self._shared.draw(
                tenant_id, rate=rate, burst=burst, now_s=now_s, need=need, want=want
            )
        except QuotaStoreUnavailable as err:
            log.warning("submit rate of tenant %s held per process for now: %s", tenant_id, err)
            return await self._fallback.draw(
                tenant_id, rate=rate, burst=burst, now_s=now_s, need=need, want=want
            )
