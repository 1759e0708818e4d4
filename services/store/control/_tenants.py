"""The control store's tenants: each one's API key is shown once and kept as a digest."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.quotas import QUOTA_NAMES, QuotaOverrides
from services.store.control._base import StoreBase
from services.store.records import (
    TENANT_KEY_PREFIX,
    Tenant,
    hash_secret,
    issue_secret,
    new_id,
)
from services.store.schema import tenants
from services.store.sql import from_db_required


class TenantMethods(StoreBase):
    def create_tenant(self, name: str) -> tuple[Tenant, str]:
        """The new tenant and its API key (shown once: only its digest is kept)."""
        key, digest = issue_secret(TENANT_KEY_PREFIX)
        tenant = Tenant(id=new_id(), name=name, created_at=self._clock())
        row = {"id": tenant.id, "name": name, "api_key_hash": digest, "created_at": self._now()}
        self._insert_named(tenants, row, taken=f"a tenant named {name!r} already exists")
        return tenant, key

    def list_tenants(self) -> list[Tenant]:
        query = sa.select(*TENANT_COLUMNS).order_by(tenants.c.name)
        with self._engine.connect() as conn:
            return [_tenant(row) for row in conn.execute(query)]

    def tenant_by_key(self, api_key: str) -> Tenant | None:
        return self.tenant_by_key_digest(hash_secret(api_key))

    def tenant_by_key_digest(self, digest: str) -> Tenant | None:
        """The tenant whose API key has this SHA-256 digest (a dashboard session keeps the
        digest, never the key)."""
        return self._one_tenant(tenants.c.api_key_hash == digest)

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self._one_tenant(tenants.c.id == tenant_id)

    def tenant_by_name(self, name: str) -> Tenant | None:
        return self._one_tenant(tenants.c.name == name)

    def set_tenant_quotas(self, tenant_id: str, overrides: QuotaOverrides) -> Tenant | None:
        """Replace the tenant's quota overrides; None when there is no such tenant."""
        values = {f"quota_{name}": getattr(overrides, name) for name in QUOTA_NAMES}
        with self._engine.begin() as conn:
            done = conn.execute(tenants.update().where(tenants.c.id == tenant_id).values(values))
        return self.get_tenant(tenant_id) if done.rowcount else None

    def _one_tenant(self, where: sa.ColumnElement[bool]) -> Tenant | None:
        query = sa.select(*TENANT_COLUMNS).where(where)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _tenant(row) if row is not None else None


#: A tenant's columns, its quota overrides included: read with every key lookup, so that
#: enforcing quotas costs no query of its own.
TENANT_COLUMNS = (
    tenants.c.id,
    tenants.c.name,
    tenants.c.created_at,
    *(tenants.c[f"quota_{name}"] for name in QUOTA_NAMES),
)


def _tenant(row: sa.Row[*tuple[Any, ...]]) -> Tenant:
    overrides = QuotaOverrides(**{name: row._mapping[f"quota_{name}"] for name in QUOTA_NAMES})
    return Tenant(
        id=row.id, name=row.name, created_at=from_db_required(row.created_at), quotas=overrides
    )
