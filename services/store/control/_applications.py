"""The control store's applications: a tenant's named groups of pipelines."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.store.control._base import StoreBase
from services.store.records import Application, HasPipelines, new_id
from services.store.schema import applications, pipelines
from services.store.sql import from_db_required


class ApplicationMethods(StoreBase):
    def create_application(self, *, tenant_id: str, name: str) -> Application:
        app = Application(id=new_id(), tenant_id=tenant_id, name=name, created_at=self._clock())
        row = {"id": app.id, "tenant_id": tenant_id, "name": name, "created_at": self._now()}
        taken = f"an application named {name!r} already exists"
        self._insert_named(applications, row, taken=taken)
        return app

    def list_applications(self, *, tenant_id: str) -> list[Application]:
        query = (
            sa.select(applications)
            .where(applications.c.tenant_id == tenant_id)
            .order_by(applications.c.name)
        )
        with self._engine.connect() as conn:
            return [_application(row) for row in conn.execute(query)]

    def get_application(self, *, tenant_id: str, name: str) -> Application | None:
        query = sa.select(applications).where(
            applications.c.tenant_id == tenant_id, applications.c.name == name
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _application(row) if row is not None else None

    def delete_application(self, app: Application) -> None:
        """Delete an application that has no pipelines left (not even ones being deleted)."""
        count = (
            sa.select(sa.func.count())
            .select_from(pipelines)
            .where(pipelines.c.application_id == app.id)
        )
        with self._engine.begin() as conn:
            if conn.execute(count).scalar_one():
                raise HasPipelines(
                    f"application {app.name!r} still has pipelines; delete them first "
                    "(pipelines being deleted disappear once their topic and workers are gone)"
                )
            conn.execute(applications.delete().where(applications.c.id == app.id))


def _application(row: sa.Row[*tuple[Any, ...]]) -> Application:
    return Application(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        created_at=from_db_required(row.created_at),
    )
