"""Tenants' quotas at the API: the checks each route makes, and their answers.

The values come with the tenant (its overrides are columns of its row, read with its key)
and the operator's defaults (``WSCHED_QUOTA_*``); the submit rate's bucket is shared by
the API processes through the database, and the backlog is read from the grains' flushed
counters (see :mod:`services.quotas` for how far each may be overshot).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.context import DatabaseUnavailable, in_thread
from services.api.errors import ApiError, error_response
from services.api.fair_pool import CALLER
from services.quotas import (
    BacklogGauge,
    Draw,
    Quotas,
    QuotaStoreUnavailable,
    SubmitLimiter,
    effective,
    retry_after_s,
)
from services.settings import Settings
from services.store.control import ControlStore, Tenant

#: How long a backlog reading serves (per process); the grains flush every 2 s anyway.
BACKLOG_MAX_AGE_S = 1.0
#: What a client refused for its backlog is told to wait: about one flush of the counters.
BACKLOG_RETRY_AFTER_S = 2
#: Callers remembered for early refusals (the least recently seen go first).
CALLERS_KEPT = 10_000
#: The submit routes (one task, a batch): those the submit rate applies to.
SUBMIT_PATH = re.compile(r"^/api/applications/[^/]+/pipelines/[^/]+(?:/tasks)?/?$")


def _bound(value: float) -> float | None:
    return None if value == 0 else value


def default_quotas(settings: Settings) -> Quotas:
    """The operator's defaults; a setting of 0 is unbounded."""
    return Quotas(
        max_pipelines=_int(settings.quota_max_pipelines),
        max_backlog=_int(settings.quota_max_backlog),
        submit_rate=_bound(settings.quota_submit_rate),
        submit_burst=_int(settings.quota_submit_burst),
        max_request_bytes=_int(settings.quota_max_request_bytes),
    )


def _int(value: int) -> int | None:
    return None if value == 0 else value


class _StoreBuckets:
    """The shared buckets: rows of the control store, drawn from in a worker thread."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store

    async def draw(
        self, tenant_id: str, *, rate: float, burst: int, now_s: float, need: int, want: int
    ) -> Draw:
        try:
            return await in_thread(
                self._store.draw_submit_tokens,
                tenant_id,
                rate=rate,
                burst=burst,
                now_s=now_s,
                need=need,
                want=want,
            )
        except DatabaseUnavailable as err:
            raise QuotaStoreUnavailable(str(err)) from err


@dataclass(kw_only=True)
class QuotaGuard:
    """One per API process: the defaults, the rate limiter and the backlog readings."""

    defaults: Quotas
    #: The process's own bound on a request body, which no quota can raise.
    max_request_bytes: int
    store: ControlStore
    clock: Callable[[], float]
    limiter: SubmitLimiter = field(init=False)
    backlog: BacklogGauge = field(init=False)
    #: Whose credential each caller (see ``fair_pool.CALLER``) was last seen to be.
    _callers: OrderedDict[int, tuple[str, Quotas]] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.limiter = SubmitLimiter(shared=_StoreBuckets(self.store), clock=self.clock)
        self.backlog = BacklogGauge(
            read=self._read_backlog, clock=self.clock, max_age_s=BACKLOG_MAX_AGE_S
        )

    async def _read_backlog(self, tenant_id: str) -> int:
        try:
            return await in_thread(self.store.tenant_backlog, tenant_id)
        except DatabaseUnavailable as err:
            raise QuotaStoreUnavailable(str(err)) from err

    def of(self, tenant: Tenant) -> Quotas:
        """The quotas in force for ``tenant`` (0 in an override: unbounded)."""
        quotas = effective(self.defaults, tenant.quotas)
        request = quotas.max_request_bytes or self.max_request_bytes
        return Quotas(
            max_pipelines=_int(quotas.max_pipelines or 0),
            max_backlog=_int(quotas.max_backlog or 0),
            submit_rate=_bound(quotas.submit_rate or 0),
            submit_burst=_int(quotas.submit_burst or 0),
            max_request_bytes=min(request, self.max_request_bytes),
        )

    def check_request_size(self, tenant: Tenant, size: int) -> None:
        limit = self.of(tenant).max_request_bytes or self.max_request_bytes
        if size > limit:
            raise ApiError(
                413,
                "request_too_large",
                f"the request body is {size} bytes, over the max_request_bytes quota of "
                f"{limit}; split it into smaller requests",
            )

    def check_pipelines(self, tenant: Tenant, live: int) -> None:
        limit = self.of(tenant).max_pipelines
        if limit is not None and live >= limit:
            raise ApiError(
                403,
                "quota_exceeded",
                f"the tenant has {live} pipelines, its max_pipelines quota is {limit}; "
                "delete one first, or ask the operator for a higher max_pipelines",
            )

    def remember_caller(self, caller: int, tenant: Tenant) -> None:
        """Note whose credential ``caller`` is (see :class:`EarlyRefusal`)."""
        if not caller:
            return
        self._callers[caller] = (tenant.id, self.of(tenant))
        self._callers.move_to_end(caller)
        while len(self._callers) > CALLERS_KEPT:
            self._callers.popitem(last=False)

    def refusal(self, caller: int) -> ApiError | None:
        """The 429 for a submit by ``caller`` while its tenant's bucket is known to be
        empty, else None; reads nothing."""
        known = self._callers.get(caller)
        if known is None:
            return None
        tenant_id, quotas = known
        wait_s = self.limiter.known_empty(tenant_id)
        return self._rate_limited(quotas, wait_s) if wait_s > 0 else None

    def refuse_early(self, tenant: Tenant) -> None:
        """A 429 at once, before the route reads anything, while this process knows the
        tenant's bucket is empty: a tenant flooding past its rate then costs one lookup
        (its key) per request, not the pipeline's too."""
        wait_s = self.limiter.known_empty(tenant.id)
        if wait_s > 0:
            raise self._rate_limited(self.of(tenant), wait_s)

    async def admit_submit(self, tenant: Tenant, count: int) -> None:
        """Refuse a submit of ``count`` tasks over the tenant's backlog or submit rate
        (429 with Retry-After), or larger than its burst could ever allow (413)."""
        quotas = self.of(tenant)
        if quotas.submit_rate is not None and count > quotas.burst():
            raise ApiError(
                413,
                "batch_too_large",
                f"{count} tasks in one request, over the submit_burst quota of "
                f"{quotas.burst()}; split the batch",
            )
        await self._check_backlog(tenant, quotas, count)
        wait_s = await self.limiter.acquire(tenant.id, quotas, count)
        if wait_s > 0:
            raise self._rate_limited(quotas, wait_s)

    @staticmethod
    def _rate_limited(quotas: Quotas, wait_s: float) -> ApiError:
        return ApiError(
            429,
            "rate_limited",
            f"over the submit_rate quota of {quotas.submit_rate:g} tasks a second "
            f"(burst {quotas.burst()}); retry after Retry-After seconds, or ask the "
            "operator for a higher submit_rate",
            headers={"Retry-After": str(retry_after_s(wait_s))},
        )

    async def _check_backlog(self, tenant: Tenant, quotas: Quotas, count: int) -> None:
        if quotas.max_backlog is None:
            return
        backlog = await self.backlog.current(tenant.id)
        if backlog + count > quotas.max_backlog:
            raise ApiError(
                429,
                "backlog_full",
                f"the tenant has {backlog} tasks queued or scheduled, and {count} more "
                f"would pass its max_backlog quota of {quotas.max_backlog}; retry once "
                "tasks have run, or ask the operator for a higher max_backlog",
                headers={"Retry-After": str(BACKLOG_RETRY_AFTER_S)},
            )

    def accepted(self, tenant: Tenant, count: int) -> None:
        """Count tasks just produced into the tenant's backlog until the next reading."""
        self.backlog.added(tenant.id, count)


class EarlyRefusal:
    """ASGI middleware: a submit whose credential belongs to a tenant whose bucket this
    process knows to be empty is answered 429 before its body is read or its key looked
    up, so a client that ignores Retry-After and sends again at once costs the API next
    to nothing. Only a request carrying the tenant's own credential is refused so; the
    first request after the bucket empties goes the whole way (and is refused there)."""

    def __init__(self, app: ASGIApp, *, guard: QuotaGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and SUBMIT_PATH.match(scope["path"])
        ):
            refusal = self.guard.refusal(CALLER.get())
            if refusal is not None:
                response = error_response(
                    refusal.status, refusal.error, refusal.detail, refusal.headers
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
