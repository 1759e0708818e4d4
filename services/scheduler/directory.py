"""What the scheduler reads about pipelines from the store: configs, tokens, owners."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from actors.pipeline.model import GrainKey, PipelineConfig, Status
from actors.pipeline.ports import StoreUnavailable
from actors.pipeline.retry import Backoff
from services.deploy.naming import namespace_for, release_name
from services.deploy.scaling import ScalingPolicy
from services.placement import TopicMode, shard_of
from services.store import schedule_rows, wakeups
from services.store.coalesce import Coalescer
from services.store.control import TokenDigests, utcnow, worker_token_digests_of
from services.store.engine import UNREACHABLE
from services.store.schema import applications, grain_owners, pipelines, schedules, tasks, tenants
from services.store.shard_offsets import shard_key
from services.store.sql import chunks

READY = "ready"


def _lead_s(scaling_json: str) -> float:
    """The pipeline's ``scaling.lead_s`` (the API checked it; a bad value here is 0)."""
    try:
        return ScalingPolicy.from_mapping(json.loads(scaling_json)).lead_s
    except ValueError:
        return 0.0


#: How old a cached digest may be before a token it refuses is checked in the store again
#: (at most once per this many seconds and pipeline, whatever the workers send).
_REREAD_S = 1.0


@dataclass(frozen=True, kw_only=True)
class _Digests:
    digests: TokenDigests | None
    read_at: float
    fresh_until: float


def _refused_long_ago(cached: _Digests, token: str, now: float, wall: dt.datetime) -> bool:
    return not _accepts(cached.digests, token, wall) and now - cached.read_at > _REREAD_S


def _accepts(digests: TokenDigests | None, token: str, wall: dt.datetime) -> bool:
    return digests is not None and digests.accepts(token, now=wall)


@dataclass(frozen=True)
class Hosting:
    """How a ready pipeline is hosted."""

    #: Partitions of its own topic (1 on the shared topic: its shard's).
    partitions: int
    #: On the shared topic (its shard's forwarder reads it), or a topic of its own.
    shared: bool
    lease_timeout_s: float
    #: (Helm release, namespace) of its workers: the KEDA gauge's labels; None if the
    #: names are unknown.
    queue_labels: tuple[str, str] | None


#: Task statuses that need an active grain now.
_NOW = (Status.QUEUED.value, Status.LEASED.value)
#: ``str(GrainKey(pipeline_id=...))`` in SQL: a pipeline's grain row is ``<id>/0``.
_SLICE_0 = "/0"


def _hosting(row: Any) -> Hosting:
    labels = None
    if row.tenant is not None and row.application is not None:
        release = release_name(row.tenant, row.application, row.name)
        labels = (release, row.namespace or namespace_for(row.tenant))
    return Hosting(
        partitions=int(row.partitions),
        shared=row.topic == TopicMode.SHARED.value,
        lease_timeout_s=float(row.lease_timeout_s),
        queue_labels=labels,
    )


class PipelineDirectory:
    """Reads pipelines for the scheduler, caching worker token hashes briefly."""

    def __init__(
        self,
        *,
        engine: sa.Engine,
        window_tasks: int,
        write_delay_s: float = 0.0,
        token_ttl_s: float = 30,
        token_cache_size: int = 10_000,
        owner_ttl_s: float = 2.0,
        wall_clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """``wall_clock``: when a rotated-out worker token's grace period is over;
        ``owner_ttl_s``: how long a shard's owner read for a redirect is trusted."""
        self._engine = engine
        self._wall_clock = wall_clock
        self._window_tasks = window_tasks
        self._write_delay_s = write_delay_s
        self._configs: Coalescer[str, PipelineConfig | None] = Coalescer(self._configs_of)
        #: The first polls of many pipelines' workers read their tokens together.
        self._digests: Coalescer[str, TokenDigests | None] = Coalescer(
            lambda ids: asyncio.to_thread(worker_token_digests_of, self._engine, ids),
            max_batch=500,
        )
        #: The readiness lookups of many pipelines (wake-ups of pipelines not hosted here,
        #: changes announced together) go together.
        self._ready: Coalescer[str, Hosting | None] = Coalescer(self._ready_of, max_batch=500)
        self._token_ttl_s = token_ttl_s
        #: pipeline id -> its token digests (None: no such pipeline), least recently used
        #: first: bounded, so a flood of made-up pipeline ids cannot grow it.
        self._tokens: OrderedDict[str, _Digests] = OrderedDict()
        self._token_cache_size = token_cache_size
        #: Bumped by every ``forget_token``: digests read since are not kept for long.
        self._rotations = 0
        #: shard -> (its owner's address, until when it is trusted): the redirects of
        #: many workers asking the wrong replica cost one read per shard, not one each.
        self._shard_owners: dict[int, tuple[str, float]] = {}
        self._owner_ttl_s = owner_ttl_s

    async def pipeline_config(self, pipeline_id: str) -> PipelineConfig | None:
        """The config of a ready pipeline, None if it is not; the lookups of many grains
        activating at once go together (``coalesce.py``)."""
        return await self._configs.get(pipeline_id)

    async def _configs_of(self, pipeline_ids: Sequence[str]) -> dict[str, PipelineConfig | None]:
        def read() -> dict[str, PipelineConfig | None]:
            found: dict[str, PipelineConfig | None] = dict.fromkeys(pipeline_ids)
            with self._engine.connect() as conn:
                for chunk in chunks(list(pipeline_ids)):
                    for row in conn.execute(
                        sa.select(
                            pipelines.c.id,
                            pipelines.c.max_attempts,
                            pipelines.c.backoff_json,
                            pipelines.c.lease_timeout_s,
                            pipelines.c.retention_s,
                            pipelines.c.scaling_json,
                            pipelines.c.execution_timeout_s,
                            pipelines.c.topic,
                        ).where(pipelines.c.id.in_(chunk), pipelines.c.state == READY)
                    ):
                        found[row.id] = self._config(row)
            return found

        return await asyncio.to_thread(read)

    def _config(self, row: Any) -> PipelineConfig:
        return PipelineConfig(
            pipeline_id=row.id,
            max_attempts=row.max_attempts,
            backoff=Backoff(**json.loads(row.backoff_json)) if row.backoff_json else Backoff(),
            lease_timeout_s=float(row.lease_timeout_s),
            retention_s=float(row.retention_s),
            window_tasks=self._window_tasks,
            lead_s=_lead_s(row.scaling_json),
            execution_timeout_s=row.execution_timeout_s,
            write_delay_s=self._write_delay_s,
        )

    async def ready_pipelines(self, shards: Iterable[int]) -> dict[str, Hosting]:
        """Ready pipelines of the given shards, and how each is hosted: one statement for
        all of them (a replica taking shards of 10,000 pipelines reads no row per one)."""
        wanted = sorted(set(shards))
        if not wanted:
            return {}
        return await self._hosting(pipelines.c.shard.in_(wanted))

    async def ready_pipeline(self, pipeline_id: str) -> Hosting | None:
        """How a pipeline is hosted, if it is ready (one that is gone or being deleted is
        not); asked for many pipelines at once, one read for them all (``coalesce.py``)."""
        return await self._ready.get(pipeline_id)

    async def _ready_of(self, pipeline_ids: Sequence[str]) -> dict[str, Hosting | None]:
        found: dict[str, Hosting | None] = dict.fromkeys(pipeline_ids)
        found.update(await self._hosting(pipelines.c.id.in_(list(pipeline_ids))))
        return found

    async def _hosting(self, which: sa.ColumnElement[bool]) -> dict[str, Hosting]:
        query = (
            sa.select(
                pipelines.c.id,
                pipelines.c.partitions,
                pipelines.c.topic,
                pipelines.c.lease_timeout_s,
                pipelines.c.name,
                applications.c.name.label("application"),
                tenants.c.name.label("tenant"),
                tenants.c.namespace,
            )
            .join_from(pipelines, tenants, tenants.c.id == pipelines.c.tenant_id, isouter=True)
            .join(applications, applications.c.id == pipelines.c.application_id, isouter=True)
            .where(which, pipelines.c.state == READY)
        )

        def read() -> dict[str, Hosting]:
            with self._engine.connect() as conn:
                return {row.id: _hosting(row) for row in conn.execute(query)}

        return await asyncio.to_thread(read)

    async def with_work(self, pipeline_ids: Sequence[str]) -> set[str]:
        """Those of these pipelines whose grain must be active to do its work: tasks
        waiting or leased (a lease's timeout runs in the grain), or timers or schedules
        to fire unless the grain rests with a wake-up (the wake-up index activates it
        when they come due; a grain active when its replica died wrote none). The others
        are hosted inactive; a record activates them. One statement per 500."""

        def read() -> set[str]:
            busy: set[str] = set()
            with self._engine.connect() as conn:
                for chunk in chunks(list(pipeline_ids)):
                    live = sa.exists().where(
                        tasks.c.pipeline_id == pipelines.c.id,
                        tasks.c.status.in_(_NOW),
                    )
                    later = sa.or_(
                        sa.exists().where(
                            tasks.c.pipeline_id == pipelines.c.id,
                            tasks.c.status == Status.SCHEDULED.value,
                        ),
                        sa.exists().where(schedules.c.pipeline_id == pipelines.c.id),
                    )
                    resting = sa.exists().where(
                        grain_owners.c.grain_id == pipelines.c.id + _SLICE_0,
                        grain_owners.c.wake_at.is_not(None),
                    )
                    rows = conn.execute(
                        sa.select(pipelines.c.id).where(
                            pipelines.c.id.in_(chunk),
                            sa.or_(live, sa.and_(later, sa.not_(resting))),
                        )
                    )
                    busy.update(row.id for row in rows)
            return busy

        return await asyncio.to_thread(read)

    async def resting(self, pipeline_ids: Sequence[str]) -> set[str]:
        """Those of these pipelines whose grain rests with a wake-up (``wakeups.py``)."""

        def read() -> set[str]:
            with self._engine.connect() as conn:
                return wakeups.resting(conn, pipeline_ids)

        return await asyncio.to_thread(read)

    async def schedule_versions(self, pipeline_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """The schedules' versions of these pipelines (pipeline -> schedule id -> version;
        those with none are absent), in one statement per 500 pipelines."""

        def read() -> dict[str, dict[str, int]]:
            with self._engine.connect() as conn:
                return schedule_rows.versions_of(conn, pipeline_ids)

        return await asyncio.to_thread(read)

    async def authenticate(self, pipeline_id: str, token: str) -> bool:
        """Check a worker token against its pipeline's digests, cached for ``token_ttl_s``
        or until a rotation is announced (``forget_token``).

        A token rotated out is accepted until its grace period ends (checked on each call,
        so the cache never stretches it). A token that matches nothing cached is checked
        against the store once more when the entry is older than ``_REREAD_S``: workers
        deployed with a new token are not refused for the cache's lifetime.
        While the database cannot be reached, digests seen before still answer (workers
        keep running through an outage); without them it is ``StoreUnavailable``, which
        workers retry, not a refusal they would take as final.
        """
        cached = self._tokens.get(pipeline_id)
        now = time.monotonic()
        wall = self._wall_clock()
        if (
            cached is None
            or cached.fresh_until < now
            or _refused_long_ago(cached, token, now, wall)
        ):
            cached = await self._read_digests(pipeline_id)
        self._tokens.move_to_end(pipeline_id)
        while len(self._tokens) > self._token_cache_size:
            self._tokens.popitem(last=False)
        return _accepts(cached.digests, token, wall)

    def forget_token(self, pipeline_id: str) -> None:
        """The pipeline's worker token was rotated (``wsched.revocations``): its cached
        digests may still call the old token current, past a grace shorter than the cache's
        lifetime, so the next check reads them again. Dropped, not kept for an outage: the
        pipeline's workers are then told to retry, never let in with a revoked token."""
        self._tokens.pop(pipeline_id, None)
        self._rotations += 1

    async def _read_digests(self, pipeline_id: str) -> _Digests:
        rotations = self._rotations
        try:
            digests = await self._digests.get(pipeline_id)
        except UNREACHABLE as err:
            cached = self._tokens.get(pipeline_id)
            if cached is None:
                raise StoreUnavailable("worker tokens cannot be read now") from err
            return cached
        now = time.monotonic()
        # Begun before a rotation was announced, the read may hold the old digests: it
        # answers this call, and the next one reads again.
        ttl = self._token_ttl_s if rotations == self._rotations else 0.0
        fresh = _Digests(digests=digests, read_at=now, fresh_until=now + ttl)
        self._tokens[pipeline_id] = fresh
        return fresh

    async def owner_address(self, pipeline_id: str) -> str | None:
        """The address of the replica that serves the pipeline, if any: the owner of its
        placement shard (its fencing row ``shard:<n>``, claimed by the shard's forwarder
        when the shard is taken), else the last owner of its grain. The grain's row alone
        would name a replica that lost the shard while the grain was inactive (a shared
        pipeline's grain is activated only when it has work), and the poll would bounce
        between replicas until a record activated it."""
        shard = shard_of(pipeline_id)
        cached = self._shard_owners.get(shard)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]  # a shard's owner changes at a rebalance, not per poll
        grain_key = str(GrainKey(pipeline_id=pipeline_id))
        key_of_shard = shard_key(shard)

        def read() -> dict[str, str]:
            with self._engine.connect() as conn:
                return {
                    str(key): str(owner)
                    for key, owner in conn.execute(
                        sa.select(grain_owners.c.grain_id, grain_owners.c.owner).where(
                            grain_owners.c.grain_id.in_([key_of_shard, grain_key])
                        )
                    ).all()
                }

        try:
            owners = await asyncio.to_thread(read)
        except UNREACHABLE as err:
            raise StoreUnavailable("the grain's owner cannot be read now") from err
        if key_of_shard in owners:
            expires = time.monotonic() + self._owner_ttl_s
            self._shard_owners[shard] = (owners[key_of_shard], expires)
            return owners[key_of_shard]
        return owners.get(grain_key)
