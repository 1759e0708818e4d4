"""What the scheduler reads about pipelines from the store: configs, tokens, owners."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Iterable

import sqlalchemy as sa

from actors.pipeline.model import GrainKey, PipelineConfig
from actors.pipeline.ports import StoreUnavailable
from actors.pipeline.retry import Backoff
from services.deploy.naming import namespace_for, release_name
from services.deploy.scaling import ScalingPolicy
from services.store.control import pipeline_names
from services.store.schema import grain_owners, pipelines

READY = "ready"


def _lead_s(scaling_json: str) -> float:
    """The pipeline's ``scaling.lead_s`` (the API checked it; a bad value here is 0)."""
    try:
        return ScalingPolicy.from_mapping(json.loads(scaling_json)).lead_s
    except ValueError:
        return 0.0


class PipelineDirectory:
    """Reads pipelines for the scheduler, caching worker token hashes briefly."""

    def __init__(
        self,
        *,
        engine: sa.Engine,
        window_tasks: int,
        token_ttl_s: float = 30,
        token_cache_size: int = 10_000,
    ) -> None:
        self._engine = engine
        self._window_tasks = window_tasks
        self._token_ttl_s = token_ttl_s
        #: pipeline id -> (fresh until, token hash or None), least recently used first:
        #: bounded, so a flood of made-up pipeline ids cannot grow it.
        self._tokens: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._token_cache_size = token_cache_size

    async def pipeline_config(self, pipeline_id: str) -> PipelineConfig | None:
        def read() -> PipelineConfig | None:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(
                        pipelines.c.max_attempts,
                        pipelines.c.backoff_json,
                        pipelines.c.lease_timeout_s,
                        pipelines.c.retention_s,
                        pipelines.c.scaling_json,
                        pipelines.c.execution_timeout_s,
                    ).where(pipelines.c.id == pipeline_id, pipelines.c.state == READY)
                ).first()
            if row is None:
                return None
            return PipelineConfig(
                pipeline_id=pipeline_id,
                max_attempts=row.max_attempts,
                backoff=Backoff(**json.loads(row.backoff_json)) if row.backoff_json else Backoff(),
                lease_timeout_s=float(row.lease_timeout_s),
                retention_s=float(row.retention_s),
                window_tasks=self._window_tasks,
                lead_s=_lead_s(row.scaling_json),
                execution_timeout_s=row.execution_timeout_s,
            )

        return await asyncio.to_thread(read)

    async def queue_labels(self, pipeline_id: str) -> tuple[str, str] | None:
        """(Helm release, namespace) of the pipeline's workers: the KEDA gauge's labels."""

        def read() -> tuple[str, str] | None:
            names = pipeline_names(self._engine, pipeline_id)
            if names is None:
                return None
            tenant, application, pipeline = names
            return release_name(tenant, application, pipeline), namespace_for(tenant)

        return await asyncio.to_thread(read)

    async def ready_pipelines(self, shards: Iterable[int]) -> dict[str, int]:
        """Ready pipelines of the given shards: id -> number of topic partitions."""
        wanted = sorted(set(shards))
        if not wanted:
            return {}

        def read() -> dict[str, int]:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.select(pipelines.c.id, pipelines.c.partitions).where(
                        pipelines.c.shard.in_(wanted), pipelines.c.state == READY
                    )
                ).all()
            return {row.id: int(row.partitions) for row in rows}

        return await asyncio.to_thread(read)

    async def partitions(self, pipeline_id: str) -> int | None:
        def read() -> int | None:
            with self._engine.connect() as conn:
                value = conn.execute(
                    sa.select(pipelines.c.partitions).where(
                        pipelines.c.id == pipeline_id, pipelines.c.state == READY
                    )
                ).scalar()
            return int(value) if value is not None else None

        return await asyncio.to_thread(read)

    async def authenticate(self, pipeline_id: str, token: str) -> bool:
        """Check a worker token against its pipeline's hash, cached for ``token_ttl_s``.

        While the database cannot be reached, a hash seen before still answers (workers
        keep running through an outage); without one it is ``StoreUnavailable``, which
        workers retry, not a refusal they would take as final.
        """
        cached = self._tokens.get(pipeline_id)
        if cached is None or cached[0] < time.monotonic():
            try:
                expected = await asyncio.to_thread(self._token_hash, pipeline_id)
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as err:
                if cached is None:
                    raise StoreUnavailable("worker tokens cannot be read now") from err
            else:
                cached = (time.monotonic() + self._token_ttl_s, expected)
                self._tokens[pipeline_id] = cached
        self._tokens.move_to_end(pipeline_id)
        while len(self._tokens) > self._token_cache_size:
            self._tokens.popitem(last=False)
        expected_hash = cached[1]
        if expected_hash is None:
            return False
        given = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(given, expected_hash)

    def _token_hash(self, pipeline_id: str) -> str | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.select(pipelines.c.worker_token_hash).where(pipelines.c.id == pipeline_id)
            ).scalar()
        return str(value) if value is not None else None

    async def owner_address(self, pipeline_id: str) -> str | None:
        """The address of the replica that owns the pipeline's grain, if any."""

        def read() -> str | None:
            with self._engine.connect() as conn:
                value = conn.execute(
                    sa.select(grain_owners.c.owner).where(
                        grain_owners.c.grain_id == str(GrainKey(pipeline_id=pipeline_id))
                    )
                ).scalar()
            return str(value) if value is not None else None

        try:
            return await asyncio.to_thread(read)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as err:
            raise StoreUnavailable("the grain's owner cannot be read now") from err
