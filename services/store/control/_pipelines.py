"""The control store's pipelines: created with their worker token, read by the API, the
deployers and the scheduler, and moved through their states by compare-and-set (the
reconciler's steps), so that a step that raced with another changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from services.placement import TopicMode, shard_of
from services.store.control._base import StoreBase
from services.store.records import (
    DEPLOYMENT_PENDING,
    PURGE_BATCH,
    WORKER_TOKEN_PREFIX,
    Application,
    NotFound,
    Pipeline,
    PipelineChanges,
    PipelineSpec,
    PipelineState,
    TokenUnavailable,
    _json,
    hash_secret,
    issue_secret,
    new_id,
)
from services.store.schema import (
    applications,
    grain_offsets,
    grain_owners,
    pipeline_stats,
    pipelines,
    schedule_state,
    schedules,
    task_attempts,
    task_timers,
    tasks,
    tenants,
)
from services.store.sql import chunks, from_db, from_db_required, to_db
from services.store.tokens import TokenUnreadable

log = logging.getLogger("wsched.store.pipelines")

#: How many times a worker token rotation reads the current digest again after another
#: rotation went first; each conflict is another rotation's success, so this is rarely hit.
_ROTATION_ATTEMPTS = 5


class PipelineMethods(StoreBase):
    def create_pipeline(self, *, app: Application, spec: PipelineSpec) -> tuple[Pipeline, str]:
        """Insert the pipeline in state ``provisioning``; returns it and its worker token."""
        token, digest = issue_secret(WORKER_TOKEN_PREFIX)
        pipeline_id = new_id()
        now = self._now()
        row = {
            "id": pipeline_id,
            "tenant_id": app.tenant_id,
            "application_id": app.id,
            "name": spec.name,
            "live_name": spec.name,
            "chart": spec.chart,
            "chart_version": spec.chart_version,
            "values_json": _json(spec.values),
            # The shared topic gives a pipeline one partition: its shard's.
            "partitions": 1 if spec.topic_mode is TopicMode.SHARED else spec.partitions,
            "topic": spec.topic_mode.value,
            "scaling_json": _json(spec.scaling),
            "max_attempts": spec.max_attempts,
            "backoff_json": _json(spec.backoff) if spec.backoff else None,
            "expires_after_s": spec.expires_after_s,
            "execution_timeout_s": spec.execution_timeout_s,
            "lease_timeout_s": spec.lease_timeout_s,
            "retention_s": spec.retention_s,
            "state": PipelineState.PROVISIONING.value,
            "state_reason": "",
            "deployment_json": _json({"status": DEPLOYMENT_PENDING, "revision": 0}),
            "worker_token_hash": digest,
            "worker_token_enc": self._cipher.encrypt(token) if self._cipher else None,
            "shard": shard_of(pipeline_id),
            "created_at": now,
            "updated_at": now,
        }
        taken = f"application {app.name!r} already has a pipeline named {spec.name!r}"
        self._insert_named(pipelines, row, taken=taken)
        created = self.pipeline_by_id(pipeline_id)
        if created is None:  # pragma: no cover - deleted between two statements
            raise NotFound(f"pipeline {spec.name!r} disappeared while it was being created")
        return created, token

    def list_pipelines(self, *, application_id: str) -> list[Pipeline]:
        query = (
            sa.select(pipelines)
            .where(pipelines.c.application_id == application_id)
            .order_by(pipelines.c.name, pipelines.c.id)
        )
        with self._engine.connect() as conn:
            return [_pipeline(row) for row in conn.execute(query)]

    def all_pipelines(self) -> list[tuple[str, str, Pipeline]]:
        """Every tenant's pipelines with their tenant's and application's names, for the
        operator's overview (tenant, application, pipeline order)."""
        query = (
            sa.select(
                tenants.c.name.label("tenant_name"),
                applications.c.name.label("app_name"),
                pipelines,
            )
            .join(applications, applications.c.id == pipelines.c.application_id)
            .join(tenants, tenants.c.id == applications.c.tenant_id)
            .order_by(tenants.c.name, applications.c.name, pipelines.c.name, pipelines.c.id)
        )
        with self._engine.connect() as conn:
            return [(row.tenant_name, row.app_name, _pipeline(row)) for row in conn.execute(query)]

    def get_pipeline(self, *, application_id: str, name: str) -> Pipeline | None:
        """The live pipeline of that name (one being deleted no longer answers to it)."""
        query = sa.select(pipelines).where(
            pipelines.c.application_id == application_id, pipelines.c.live_name == name
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _pipeline(row) if row is not None else None

    def find_pipeline(self, *, tenant_id: str, application: str, name: str) -> Pipeline | None:
        """One query for the submit path: the tenant's application and its live pipeline."""
        query = (
            sa.select(pipelines)
            .join(applications, applications.c.id == pipelines.c.application_id)
            .where(
                applications.c.tenant_id == tenant_id,
                applications.c.name == application,
                pipelines.c.live_name == name,
            )
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _pipeline(row) if row is not None else None

    def pipeline_by_id(self, pipeline_id: str) -> Pipeline | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(pipelines).where(pipelines.c.id == pipeline_id)).first()
        return _pipeline(row) if row is not None else None

    def pipelines_of_shards(self, shards: Iterable[int]) -> list[Pipeline]:
        """Every pipeline placed on one of ``shards`` (for a shard's owner to load)."""
        query = sa.select(pipelines).where(pipelines.c.shard.in_(list(shards)))
        with self._engine.connect() as conn:
            return [_pipeline(row) for row in conn.execute(query.order_by(pipelines.c.id))]

    def verify_worker_token(self, *, pipeline_id: str, token: str) -> bool:
        digests = worker_token_digests(self._engine, pipeline_id)
        return digests is not None and digests.accepts(token, now=self._clock())

    def rotate_worker_token(
        self, pipeline: Pipeline, *, grace: dt.timedelta
    ) -> tuple[Pipeline, str]:
        """Issue a new worker token and mark the deployment pending, so the reconciler
        deploys the workers again with it; the token it replaces stays valid for ``grace``.

        The write is a compare-and-set on the current digest, read again after a conflict
        (at most ``_ROTATION_ATTEMPTS`` times): two rotations at once apply one after the
        other, and neither's token is lost. After two quick rotations the previous token
        is the first one's (the token current just before the second), valid for the
        second's grace; the one before it is no longer valid, whatever its grace was (a
        pipeline keeps one previous token). Raises NotFound, or TokenUnavailable.
        """
        if self._cipher is None:
            raise TokenUnavailable("this process has no key to encrypt worker tokens with")
        token, digest = issue_secret(WORKER_TOKEN_PREFIX)
        issued = {"worker_token_hash": digest, "worker_token_enc": self._cipher.encrypt(token)}
        until = self._grace_end(grace)
        for _ in range(_ROTATION_ATTEMPTS):
            current = worker_token_digests(self._engine, pipeline.id)
            if current is None:
                raise NotFound(f"pipeline {pipeline.name!r} no longer exists")
            # Literal values, not a column reference: MySQL assigns SET clauses in order, so
            # "previous = current" after "current = new" would copy the new digest.
            changes = {
                **issued,
                "previous_token_hash": current.current if until else None,
                "previous_token_until": to_db(until),
            }
            unchanged = pipelines.c.worker_token_hash == current.current
            updated = self._update_live(pipeline, changes, only_if=unchanged)
            if updated is not None:
                return updated, token
            self._check_live(pipeline)
            log.info("pipeline %s: worker token rotated meanwhile; read again", pipeline.id)
        raise TokenUnavailable(
            f"pipeline {pipeline.name!r}: its worker token was rotated by "
            f"{_ROTATION_ATTEMPTS} other requests meanwhile; rotate it again"
        )

    def worker_token(self, pipeline_id: str) -> str:
        """The pipeline's worker token in plain text, for a deployer to hand to its workers.

        Raises NotFound, or TokenUnavailable saying why the token cannot be had.
        """
        query = sa.select(pipelines.c.worker_token_enc).where(pipelines.c.id == pipeline_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no pipeline with id {pipeline_id}")
        if row.worker_token_enc is None:
            raise TokenUnavailable(
                f"pipeline {pipeline_id} has no stored worker token (it was created before "
                "tokens were kept for deployers, or by a process without WSCHED_SECRET_KEY); "
                "delete and recreate the pipeline"
            )
        if self._cipher is None:
            raise TokenUnavailable("this process has no key to decrypt worker tokens with")
        try:
            return self._cipher.decrypt(row.worker_token_enc)
        except TokenUnreadable as err:
            raise TokenUnavailable(f"pipeline {pipeline_id}: {err}") from None

    def pipeline_names(self, pipeline_id: str) -> PipelineNameRow | None:
        """The tenant's, application's and pipeline's names and the tenant's own
        namespace: what the workers' Kubernetes names are made of."""
        return pipeline_names(self._engine, pipeline_id)

    def deployed_by(self, deployer: str) -> list[Pipeline]:
        """Ready pipelines whose workers the named deployer put in place (its ``deployer``
        in the recorded deployment)."""
        query = sa.select(pipelines).where(
            pipelines.c.state == PipelineState.READY.value,
            pipelines.c.deployment_json.like(f'%"deployer":{json.dumps(deployer)}%'),
        )
        with self._engine.connect() as conn:
            return [_pipeline(row) for row in conn.execute(query.order_by(pipelines.c.id))]

    def update_pipeline(
        self,
        pipeline: Pipeline,
        changes: PipelineChanges,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> Pipeline:
        """Apply a PATCH (and ``extra`` columns); the chart is redeployed by the reconciler.

        A ``failed`` pipeline goes back to ``provisioning`` (the patch is how a tenant
        fixes what failed); a ``ready`` one stays ready, its deployment marked pending.
        """
        updated = self._update_live(pipeline, {**changes.columns(), **(extra or {})})
        if updated is None:
            raise NotFound(f"pipeline {pipeline.name!r} is being deleted")
        return updated

    def _update_live(
        self,
        pipeline: Pipeline,
        values: Mapping[str, Any],
        *,
        only_if: sa.ColumnElement[bool] | None = None,
    ) -> Pipeline | None:
        """``update_pipeline``'s write, also conditional on ``only_if`` (a compare-and-set);
        the pipeline as written, or None when it is gone, being deleted, or ``only_if`` no
        longer held."""
        values = {**values, "updated_at": self._now()}
        values["deployment_json"] = _json(
            {**pipeline.deployment, "status": DEPLOYMENT_PENDING, "detail": ""}
        )
        if pipeline.state is PipelineState.FAILED:
            values["state"] = PipelineState.PROVISIONING.value
            values["state_reason"] = ""
        where = [pipelines.c.id == pipeline.id, pipelines.c.state != PipelineState.DELETING.value]
        if only_if is not None:
            where.append(only_if)
        with self._engine.begin() as conn:
            done = conn.execute(pipelines.update().where(*where).values(values)).rowcount
        return self.pipeline_by_id(pipeline.id) if done else None

    def _check_live(self, pipeline: Pipeline) -> None:
        """NotFound when the pipeline is gone or being deleted (why a write missed it)."""
        found = self.pipeline_by_id(pipeline.id)
        if found is None or found.state is PipelineState.DELETING:
            raise NotFound(f"pipeline {pipeline.name!r} is being deleted")

    def _transition(
        self,
        pipeline_id: str,
        *,
        when: Sequence[PipelineState],
        values: Mapping[str, Any],
        seen: dt.datetime | None = None,
    ) -> bool:
        """Set ``values`` if the pipeline is in one of the ``when`` states and, given
        ``seen``, unchanged since then (compare-and-set: a delete that raced with
        provisioning is never undone, and a PATCH made meanwhile is not marked deployed)."""
        where = [pipelines.c.id == pipeline_id, pipelines.c.state.in_([s.value for s in when])]
        if seen is not None:
            where.append(pipelines.c.updated_at == to_db(seen))
        stmt = pipelines.update().where(*where).values({**values, "updated_at": self._now()})
        with self._engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def mark_ready(
        self,
        pipeline_id: str,
        *,
        deployment: Mapping[str, Any],
        reason: str = "",
        seen: dt.datetime | None = None,
    ) -> bool:
        """Provisioned, or redeployed (``reason`` says what a failed redeploy hit: a ready
        pipeline keeps serving with its previous workers). ``seen``: the ``updated_at`` of
        the row the work was done for; a row changed since is left for another pass."""
        return self._transition(
            pipeline_id,
            when=[PipelineState.PROVISIONING, PipelineState.READY],
            values={
                "state": PipelineState.READY.value,
                "state_reason": reason,
                "deployment_json": _json(deployment),
            },
            seen=seen,
        )

    def mark_failed(
        self,
        pipeline_id: str,
        *,
        reason: str,
        deployment: Mapping[str, Any] | None = None,
        seen: dt.datetime | None = None,
    ) -> bool:
        values: dict[str, Any] = {"state": PipelineState.FAILED.value, "state_reason": reason}
        if deployment is not None:
            values["deployment_json"] = _json(deployment)
        return self._transition(
            pipeline_id, when=[PipelineState.PROVISIONING], values=values, seen=seen
        )

    def start_deleting(self, pipeline_id: str) -> bool:
        """Enter ``deleting``: the name is free at once, submissions are refused."""
        return self._transition(
            pipeline_id,
            when=[PipelineState.PROVISIONING, PipelineState.READY, PipelineState.FAILED],
            values={"state": PipelineState.DELETING.value, "live_name": None, "state_reason": ""},
        )

    def note_deleting_problem(self, pipeline_id: str, *, reason: str) -> bool:
        return self._transition(
            pipeline_id, when=[PipelineState.DELETING], values={"state_reason": reason}
        )

    def pending_reconcile(self) -> list[Pipeline]:
        """Pipelines the reconciler still has work for (after a restart, or a missed nudge)."""
        busy = [PipelineState.PROVISIONING.value, PipelineState.DELETING.value]
        redeploy = sa.and_(
            pipelines.c.state == PipelineState.READY.value,
            pipelines.c.deployment_json.like(f'%"status":"{DEPLOYMENT_PENDING}"%'),
        )
        query = sa.select(pipelines).where(sa.or_(pipelines.c.state.in_(busy), redeploy))
        with self._engine.connect() as conn:
            return [_pipeline(row) for row in conn.execute(query.order_by(pipelines.c.id))]

    def purge_pipeline(self, pipeline_id: str, *, batch: int = PURGE_BATCH) -> int:
        """Delete a deleting pipeline's tasks (in bounded batches), counters and row.

        Returns how many task rows were deleted. Grain rows go too: a grain still active
        somewhere then fails its next epoch check and stops instead of writing.
        """
        for history in (task_timers.c.task_id, task_attempts.c.task_id):
            self._purge_rows(history, pipeline_id, batch=batch)
        deleted = 0
        deleted += self._purge_rows(tasks.c.id, pipeline_id, batch=batch)
        grains = f"{pipeline_id}%"
        with self._engine.begin() as conn:
            conn.execute(pipeline_stats.delete().where(pipeline_stats.c.pipeline_id == pipeline_id))
            conn.execute(schedules.delete().where(schedules.c.pipeline_id == pipeline_id))
            conn.execute(schedule_state.delete().where(schedule_state.c.pipeline_id == pipeline_id))
            conn.execute(grain_owners.delete().where(grain_owners.c.grain_id.like(grains)))
            conn.execute(grain_offsets.delete().where(grain_offsets.c.grain_id.like(grains)))
            conn.execute(
                pipelines.delete().where(
                    pipelines.c.id == pipeline_id,
                    pipelines.c.state == PipelineState.DELETING.value,
                )
            )
        return deleted

    def _purge_rows(self, key: sa.Column[str], pipeline_id: str, *, batch: int) -> int:
        """Delete the rows of ``key``'s table that belong to the pipeline, ``batch`` keys a
        transaction; returns how many keys went."""
        # SELECT then DELETE by key: portable (SQLite has no DELETE ... LIMIT) and each
        # transaction stays small.
        table = key.table
        deleted = 0
        owned = table.c.pipeline_id == pipeline_id
        pick = sa.select(key).where(owned).distinct().limit(batch)
        while True:
            with self._engine.begin() as conn:
                ids = list(conn.execute(pick).scalars())
                if not ids:
                    return deleted
                conn.execute(table.delete().where(owned, key.in_(ids)))
            deleted += len(ids)


class PipelineNameRow(NamedTuple):
    tenant: str
    application: str
    pipeline: str
    #: The tenant's own namespace; None: the default one for its name.
    namespace: str | None


@dataclass(frozen=True, kw_only=True)
class TokenDigests:
    """A pipeline's worker token digests: the current one, and the one a rotation
    replaced with the end of its grace period."""

    current: str
    previous: str | None = None
    previous_until: dt.datetime | None = None

    def accepts(self, token: str, *, now: dt.datetime) -> bool:
        given = hash_secret(token)
        if hmac.compare_digest(given, self.current):
            return True
        return (
            self.previous is not None
            and self.previous_until is not None
            and now < self.previous_until
            and hmac.compare_digest(given, self.previous)
        )


def worker_token_digests(engine: sa.Engine, pipeline_id: str) -> TokenDigests | None:
    """The pipeline's worker token digests (None if it is gone)."""
    return worker_token_digests_of(engine, [pipeline_id])[pipeline_id]


def worker_token_digests_of(
    engine: sa.Engine, pipeline_ids: Sequence[str]
) -> dict[str, TokenDigests | None]:
    """``worker_token_digests`` of many pipelines, one statement per 500: the first polls
    of thousands of pipelines' workers (a replica's restart) read them together."""
    found: dict[str, TokenDigests | None] = dict.fromkeys(pipeline_ids)
    with engine.connect() as conn:
        for chunk in chunks(list(pipeline_ids)):
            query = sa.select(
                pipelines.c.id,
                pipelines.c.worker_token_hash,
                pipelines.c.previous_token_hash,
                pipelines.c.previous_token_until,
            ).where(pipelines.c.id.in_(chunk))
            for row in conn.execute(query):
                found[row.id] = TokenDigests(
                    current=row.worker_token_hash,
                    previous=row.previous_token_hash,
                    previous_until=from_db(row.previous_token_until),
                )
    return found


def pipeline_names(engine: sa.Engine, pipeline_id: str) -> PipelineNameRow | None:
    """The names a pipeline's workers are named by (None if it is gone)."""
    query = (
        sa.select(tenants.c.name, applications.c.name, pipelines.c.name, tenants.c.namespace)
        .join_from(pipelines, tenants, tenants.c.id == pipelines.c.tenant_id)
        .join(applications, applications.c.id == pipelines.c.application_id)
        .where(pipelines.c.id == pipeline_id)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else PipelineNameRow(row[0], row[1], row[2], row[3])


def _pipeline(row: sa.Row[*tuple[Any, ...]]) -> Pipeline:
    return Pipeline(
        id=row.id,
        tenant_id=row.tenant_id,
        application_id=row.application_id,
        name=row.name,
        chart=row.chart,
        chart_version=row.chart_version,
        values=json.loads(row.values_json),
        partitions=row.partitions,
        scaling=json.loads(row.scaling_json),
        max_attempts=row.max_attempts,
        backoff=json.loads(row.backoff_json) if row.backoff_json else {},
        expires_after_s=row.expires_after_s,
        execution_timeout_s=row.execution_timeout_s,
        lease_timeout_s=row.lease_timeout_s,
        retention_s=row.retention_s,
        state=PipelineState(row.state),
        state_reason=row.state_reason,
        deployment=json.loads(row.deployment_json),
        shard=row.shard,
        created_at=from_db_required(row.created_at),
        updated_at=from_db_required(row.updated_at),
        topic_mode=TopicMode(row.topic),
    )
