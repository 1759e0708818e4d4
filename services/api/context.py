"""What the routes work with: the store, the Kafka and deployer ports, limits and metrics.

One :class:`ApiContext` per application, kept on ``app.state`` and handed to routes as a
dependency, so that tests build the app with in-memory ports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Request

from services.api.errors import unavailable
from services.api.fair_pool import pool
from services.api.limits import Limits
from services.api.metrics import ApiMetrics
from services.api.ui.session import SessionCodec
from services.deploy.helm import ChartAllowList
from services.deploy.ports import Deployer
from services.kafka.admin import TopicAdmin
from services.kafka.producer import EventProducer
from services.kafka.revocations import MemoryRevocations, Revocations
from services.live.hub import LiveHub
from services.live.reads import BatchedReads
from services.live.source import EventSource
from services.settings import Settings
from services.store.control import (
    ControlStore,
    ExistingTask,
    Pipeline,
    TaskRecord,
    Tenant,
    hash_secret,
    utcnow,
)
from services.store.engine import UNREACHABLE

if TYPE_CHECKING:
    from services.api.quotas import QuotaGuard

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("wsched.api")
#: A remembered lookup past this share of ``lookup_cache_s`` is read again in the
#: background, still answered meanwhile (``ApiContext._remembered``).
REFRESH_AHEAD = 0.5


class DatabaseUnavailable(Exception):
    pass


async def in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking store call in a worker thread, taking turns with other callers
    (see :mod:`services.api.fair_pool`); an unreachable database is a
    :class:`DatabaseUnavailable` (the routes answer 503), never a 500."""
    try:
        return await pool().run(fn, *args, **kwargs)
    except UNREACHABLE as err:
        cause = getattr(err, "orig", None) or err
        raise DatabaseUnavailable(f"{type(err).__name__}: {cause}") from err


@dataclass(kw_only=True)
class _Entry:
    value: object
    at: float


class LastKnown:
    """The last value read for each key, to fall back on while the database is down.

    Bounded (least recently used entries go first). Only used when a read fails: a read
    that succeeds always wins, so nothing stale is served while the database answers.
    """

    def __init__(
        self, *, max_age_s: float, max_entries: int = 10_000, clock: Callable[[], float]
    ) -> None:
        self._entries: OrderedDict[object, _Entry] = OrderedDict()
        self._max_age_s = max_age_s
        self._max_entries = max_entries
        self._clock = clock

    def put(self, key: object, value: object) -> None:
        self._entries[key] = _Entry(value=value, at=self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: object) -> None:
        self._entries.pop(key, None)

    def replace_where(self, matches: Callable[[object], bool], value: object) -> None:
        """Remember ``value`` instead of every value that ``matches``."""
        self.update_where(matches, lambda _old: value)

    def update_where(
        self, matches: Callable[[object], bool], update: Callable[[Any], object]
    ) -> None:
        """Remember ``update(value)`` instead of every value that ``matches``."""
        for entry in self._entries.values():
            if matches(entry.value):
                entry.value = update(entry.value)

    def get(self, key: object, *, max_age_s: float | None = None) -> tuple[bool, object]:
        """(found, value) of an entry read at most ``max_age_s`` ago (default: the
        fallback's age)."""
        entry = self._entries.get(key)
        limit = self._max_age_s if max_age_s is None else max_age_s
        if entry is None or self._clock() - entry.at > limit:
            return False, None
        return True, entry.value


@dataclass(kw_only=True)
class ApiContext:
    settings: Settings
    limits: Limits
    store: ControlStore
    producer: EventProducer
    admin: TopicAdmin
    deployer: Deployer
    metrics: ApiMetrics
    #: Tenants' quotas: the defaults, the shared submit buckets, the backlog readings.
    quotas: QuotaGuard
    #: ``wsched.events`` (D6): the live reader feeds ``live``; SSE resumes replay from it.
    events: EventSource
    live: LiveHub = field(default_factory=LiveHub)
    #: The chart sources tenants may name (the Helm deployer's); None: not checked, as
    #: nothing deploys charts from a source (noop) or only on this machine (local).
    charts: ChartAllowList | None = None
    #: Set by the lifespan once the reconciler runs; routes nudge it after a change.
    nudge: Callable[[str], None] = lambda _pipeline_id: None
    #: The same for a tenant being deleted.
    nudge_tenant: Callable[[str], None] = lambda _tenant_id: None
    clock: Callable[[], float] = time.monotonic
    #: When rotated-out keys stop being valid.
    wall_clock: Callable[[], dt.datetime] = utcnow
    #: Tells every API process that a tenant's keys changed (``wsched.revocations``).
    revocations: Revocations = field(default_factory=MemoryRevocations)
    #: Seals and opens the dashboard's session cookies (see services.api.ui.session).
    sessions: SessionCodec = field(init=False)
    _last_known: LastKnown = field(init=False)
    #: Waiters' reads of task rows, many per statement.
    task_reads: BatchedReads[TaskRecord] = field(init=False)
    #: Single submits' idempotency checks, many per statement (``services.api.submit``).
    existing_reads: BatchedReads[ExistingTask] = field(init=False)
    #: Lookups under way, by key: requests that miss together share one read.
    _reading: dict[object, asyncio.Task[Any]] = field(init=False, default_factory=dict)
    #: Bumped by every ``forget_tenant``: a read begun before it is not remembered.
    _generation: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._last_known = LastKnown(max_age_s=self.limits.stale_lookup_s, clock=self.clock)
        self.sessions = SessionCodec(
            secret=self.settings.effective_secret_key(), ttl_s=self.settings.ui_session_ttl_s
        )
        self.task_reads = BatchedReads(self._read_tasks)
        self.existing_reads = BatchedReads(self._read_existing)

    async def _read_tasks(self, pipeline_id: str, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        return await self.db(self.store.get_tasks, pipeline_id=pipeline_id, task_ids=task_ids)

    async def _read_existing(
        self, pipeline_id: str, task_ids: Sequence[str]
    ) -> dict[str, ExistingTask]:
        """Raises DatabaseUnavailable: each submit decides what an outage means to it."""
        return await in_thread(self.store.existing_tasks, pipeline_id=pipeline_id, ids=task_ids)

    def database_unavailable(self, err: DatabaseUnavailable) -> Exception:
        return unavailable(
            "database_unavailable",
            f"the database cannot be reached ({err}); retry later",
            retry_after_s=self.limits.retry_after_s,
        )

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await in_thread(fn, *args, **kwargs)
        except DatabaseUnavailable as err:
            raise self.database_unavailable(err) from err

    async def tenant_by_key(self, api_key: str) -> Tenant | None:
        read = functools.partial(self.store.tenant_by_key, api_key)
        return await self._tenant_of(hash_secret(api_key), read)

    async def tenant_by_key_digest(self, digest: str) -> Tenant | None:
        """The tenant of a key's digest (a dashboard session keeps the digest, never the
        key); remembered under the same entry as the key's own lookup."""
        read = functools.partial(self.store.tenant_by_key_digest, digest)
        return await self._tenant_of(digest, read)

    async def _tenant_of(self, digest: str, read: Callable[[], Tenant | None]) -> Tenant | None:
        """A rotated-out key is refused once its grace period ends, also when the answer
        is a remembered one (the database down)."""
        tenant = await self._remembered(("tenant", digest), read)
        if tenant is None or tenant.key_until is None:
            return tenant
        return tenant if self.wall_clock() < tenant.key_until else None

    def forget_tenant(self, tenant_id: str, until: dt.datetime | None = None) -> None:
        """The tenant's keys changed (``wsched.revocations``): no lookup remembered for it
        may answer beyond what now holds. Revoked (``until`` None: also a tenant being
        deleted), its entries are kept as "no such tenant", so that while the database is
        down they answer 401, not 503; rotated, the keys remembered so far hold until
        ``until`` (the grace period), and its pipelines are still its own."""

        def the_tenants(value: object) -> bool:
            return isinstance(value, Tenant) and value.id == tenant_id

        self._generation += 1
        if until is not None:
            self._last_known.update_where(the_tenants, lambda t: _until(t, until))
            return
        self._last_known.replace_where(the_tenants, None)
        self._last_known.replace_where(
            lambda value: isinstance(value, Pipeline) and value.tenant_id == tenant_id, None
        )

    async def find_pipeline(
        self, *, tenant_id: str, application: str, name: str
    ) -> Pipeline | None:
        key = ("pipeline", tenant_id, application, name)
        read = functools.partial(
            self.store.find_pipeline, tenant_id=tenant_id, application=application, name=name
        )
        # Only a ready pipeline answers from memory: one still provisioning (or failed)
        # is read again, so that it takes submits the moment it is ready.
        return await self._remembered(key, read, fresh_if=_is_ready)

    def quotas_changed(self, tenant: Tenant) -> None:
        """The tenant's quotas changed through this process: its remembered lookups hold
        the new ones at once (each keeps the end of its key's grace)."""
        self._last_known.update_where(
            lambda value: isinstance(value, Tenant) and value.id == tenant.id,
            lambda old: dataclasses.replace(old, quotas=tenant.quotas),
        )

    def forget_pipeline(self, *, tenant_id: str, application: str, name: str) -> None:
        """A pipeline changed through this process: the next lookup reads it."""
        self._last_known.drop(("pipeline", tenant_id, application, name))

    async def _remembered(
        self,
        key: object,
        read: Callable[[], R | None],
        *,
        fresh_if: Callable[[object], bool] = lambda _value: True,
    ) -> R | None:
        """Read through, unless the last read is younger than ``lookup_cache_s``; while the
        database is down, answer what was last read, so that submissions keep flowing
        into Kafka (the design's "Kafka absorbs submissions").

        Profiled (py-spy, single-task submits at 300 a second): the tenant's and the
        pipeline's lookups were nearly all of the API's thread time, three round trips
        each (pool ping, query, rollback); one tenant's burst reads them once now, and the
        requests that miss together (when the entry ages out) share one read.

        An entry past half its age is read again in the background while it is still
        answered (no value older than ``lookup_cache_s`` is), so a busy key never ages
        out and no request waits for its read: timed under ``wsched bench-fairness``,
        the request that met an expired tenant and pipeline waited 10-50 ms for them,
        every 2 s, which was the steady tenant's submit p99."""
        if self.limits.lookup_cache_s > 0:
            max_age_s = self.limits.lookup_cache_s
            found, last = self._last_known.get(key, max_age_s=max_age_s)
            if found and (last is None or fresh_if(last)):
                if not self._last_known.get(key, max_age_s=max_age_s * REFRESH_AHEAD)[0]:
                    self._read_once(key, read)  # read again ahead: nobody waits for it
                return last  # type: ignore[return-value]  # stored from the same reader
        # Shielded: a request that gives up does not cancel the others' read.
        value: R | None = await asyncio.shield(self._read_once(key, read))
        return value

    def _read_once(self, key: object, read: Callable[[], R | None]) -> asyncio.Future[R | None]:
        """The read of ``key`` under way, or a new one: concurrent misses share it."""
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read_through(key, read))
            self._reading[key] = reading
            reading.add_done_callback(lambda done: self._read_done(key, done))
        return reading

    def _read_done(self, key: object, done: asyncio.Future[Any]) -> None:
        self._reading.pop(key, None)
        if not done.cancelled() and (err := done.exception()) is not None:
            # Awaited by the requests that wait for it; one read ahead has nobody.
            log.debug("lookup %r failed: %s", key, err)

    async def _read_through(self, key: object, read: Callable[[], R | None]) -> R | None:
        generation = self._generation
        try:
            value = await in_thread(read)
        except DatabaseUnavailable as err:
            found, last = self._last_known.get(key)
            if not found:
                raise self.database_unavailable(err) from err
            self.metrics.stale_lookups.inc()
            return last  # type: ignore[return-value]  # stored from the same reader
        if value is None:
            self._last_known.drop(key)  # deleted: never fall back on it
        elif generation == self._generation:
            # Else a key was revoked while this read ran: it may hold what was before.
            self._last_known.put(key, value)
        return value


def _is_ready(value: object) -> bool:
    return isinstance(value, Pipeline) and value.state == "ready"


def _until(tenant: Tenant, until: dt.datetime) -> Tenant:
    """The tenant as looked up by a key that holds until ``until`` at the latest."""
    ends = until if tenant.key_until is None else min(tenant.key_until, until)
    return dataclasses.replace(tenant, key_until=ends)


async def _context(request: Request) -> ApiContext:
    """Async on purpose: FastAPI runs a plain function dependency in its thread pool, a
    thread hop per request that profiling showed as a tenth of the API's loop time under
    single submits."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]
