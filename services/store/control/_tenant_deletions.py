"""The control store's tenant deletions: started by the operator, carried out by the
API's reconciler step by step (pipelines, then the namespace, then the rows), each step
recorded, so that a crash resumes where it stopped and the operator can watch it.

The tenant row goes last: until then its name stays taken, so no tenant re-created
under that name can have its namespace deleted by a resumed deletion. The finished
deletion's row stays, and tells a tenant re-created under the name that the old
namespace may still be terminating (it gets another one).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.store.control._pipelines import PipelineMethods
from services.store.control._tenants import revoked_keys
from services.store.records import NotFound, PipelineState, TenantDeletion
from services.store.schema import (
    applications,
    pipelines,
    tenant_deletions,
    tenant_submit_buckets,
    tenants,
)
from services.store.sql import from_db, from_db_required

STEP_PIPELINES = "pipelines"
STEP_NAMESPACE = "namespace"
STEP_DONE = "done"


class TenantDeletionMethods(PipelineMethods):
    def start_tenant_deletion(self, tenant_id: str, *, default_namespace: str) -> TenantDeletion:
        """Record the deletion (once: a second call returns the one under way) and refuse
        the tenant's keys at once. ``default_namespace``: the tenant's namespace when it
        has none of its own."""
        with self._engine.begin() as conn:
            tenant = conn.execute(
                sa.select(tenants.c.name, tenants.c.namespace).where(tenants.c.id == tenant_id)
            ).first()
            if tenant is None:
                raise NotFound(f"no tenant with id {tenant_id}")
            started = conn.execute(
                sa.select(tenant_deletions.c.tenant_id).where(
                    tenant_deletions.c.tenant_id == tenant_id
                )
            ).first()
            if started is None:
                conn.execute(
                    tenants.update().where(tenants.c.id == tenant_id).values(revoked_keys())
                )
                conn.execute(
                    tenant_deletions.insert().values(
                        tenant_id=tenant_id,
                        name=tenant.name,
                        namespace=tenant.namespace or default_namespace,
                        step=STEP_PIPELINES,
                        detail="",
                        pipelines_left=-1,
                        started_at=self._now(),
                        updated_at=self._now(),
                    )
                )
        found = self.tenant_deletion(tenant_id)
        if found is None:  # pragma: no cover - written just above
            raise NotFound(f"no deletion of tenant {tenant_id}")
        return found

    def tenant_deletion(self, tenant_id: str) -> TenantDeletion | None:
        query = sa.select(tenant_deletions).where(tenant_deletions.c.tenant_id == tenant_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _deletion(row) if row is not None else None

    def tenant_deletion_named(self, name: str) -> TenantDeletion | None:
        """The latest deletion of a tenant of this name."""
        query = (
            sa.select(tenant_deletions)
            .where(tenant_deletions.c.name == name)
            .order_by(tenant_deletions.c.started_at.desc())
        )
        with self._engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return _deletion(row) if row is not None else None

    def pending_tenant_deletions(self) -> list[TenantDeletion]:
        query = sa.select(tenant_deletions).where(tenant_deletions.c.step != STEP_DONE)
        with self._engine.connect() as conn:
            return [_deletion(row) for row in conn.execute(query.order_by(tenant_deletions.c.name))]

    def namespace_retired(self, namespace: str) -> bool:
        """Whether a deleted (or deleting) tenant had this namespace: it may still be
        terminating, so a new tenant must not get it."""
        query = sa.select(tenant_deletions.c.tenant_id).where(
            tenant_deletions.c.namespace == namespace
        )
        with self._engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def delete_tenant_pipelines(self, tenant_id: str) -> list[str]:
        """Start deleting every live pipeline of the tenant; the ids of all its pipelines
        still there (the reconciler deletes them as it deletes any pipeline)."""
        query = sa.select(pipelines.c.id, pipelines.c.state).where(
            pipelines.c.tenant_id == tenant_id
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(pipelines.c.id)).all()
        for row in rows:
            if row.state != PipelineState.DELETING.value:
                self.start_deleting(row.id)
        return [row.id for row in rows]

    def note_tenant_deletion(
        self, tenant_id: str, *, step: str, detail: str = "", pipelines_left: int | None = None
    ) -> None:
        values: dict[str, Any] = {"step": step, "detail": detail, "updated_at": self._now()}
        if pipelines_left is not None:
            values["pipelines_left"] = pipelines_left
        where = sa.and_(
            tenant_deletions.c.tenant_id == tenant_id, tenant_deletions.c.step != STEP_DONE
        )
        with self._engine.begin() as conn:
            conn.execute(tenant_deletions.update().where(where).values(values))

    def finish_tenant_deletion(self, tenant_id: str) -> None:
        """Delete the tenant's applications, submit bucket and row (its name is free from
        now on) and mark the deletion done, in one transaction."""
        with self._engine.begin() as conn:
            left = conn.execute(
                sa.select(sa.func.count()).where(pipelines.c.tenant_id == tenant_id)
            ).scalar_one()
            if left:
                raise NotFound(f"tenant {tenant_id} still has {left} pipelines")
            conn.execute(applications.delete().where(applications.c.tenant_id == tenant_id))
            conn.execute(
                tenant_submit_buckets.delete().where(tenant_submit_buckets.c.tenant_id == tenant_id)
            )
            conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
            conn.execute(
                tenant_deletions.update()
                .where(tenant_deletions.c.tenant_id == tenant_id)
                .values(
                    step=STEP_DONE,
                    detail="",
                    pipelines_left=0,
                    updated_at=self._now(),
                    finished_at=self._now(),
                )
            )


def _deletion(row: sa.Row[*tuple[Any, ...]]) -> TenantDeletion:
    return TenantDeletion(
        tenant_id=row.tenant_id,
        name=row.name,
        namespace=row.namespace,
        step=row.step,
        detail=row.detail,
        pipelines_left=row.pipelines_left,
        started_at=from_db_required(row.started_at),
        updated_at=from_db_required(row.updated_at),
        finished_at=from_db(row.finished_at),
    )
