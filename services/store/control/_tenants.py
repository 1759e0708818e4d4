"""The control store's tenants: each one's API key is shown once and kept as a digest.

A rotation keeps the replaced key's digest, valid until the end of the grace period the
operator gave; a revocation replaces both with the digest of a key nobody was shown.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from services.quotas import QUOTA_NAMES, QuotaOverrides
from services.store.control._base import StoreBase
from services.store.records import (
    TENANT_KEY_PREFIX,
    NotFound,
    Tenant,
    hash_secret,
    issue_secret,
    new_id,
)
from services.store.schema import tenants
from services.store.sql import from_db, from_db_required, to_db


class TenantMethods(StoreBase):
    def create_tenant(self, name: str, *, namespace: str | None = None) -> tuple[Tenant, str]:
        """The new tenant and its API key (shown once: only its digest is kept).

        ``namespace``: its Kubernetes namespace when not the default ``wsched-<name>``."""
        key, digest = issue_secret(TENANT_KEY_PREFIX)
        tenant = Tenant(id=new_id(), name=name, created_at=self._clock())
        row = {
            "id": tenant.id,
            "name": name,
            "api_key_hash": digest,
            "created_at": self._now(),
            "namespace": namespace,
        }
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
        digest, never the key): its current key, or the one it replaced, until its grace
        period ends (``Tenant.key_until`` says when)."""
        current = self._one_tenant(tenants.c.api_key_hash == digest)
        if current is not None:
            return current
        query = sa.select(*TENANT_COLUMNS, tenants.c.previous_key_until).where(
            tenants.c.previous_key_hash == digest,
            tenants.c.previous_key_until > self._now(),
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return _tenant(row, key_until=from_db(row.previous_key_until))

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

    def rotate_key(self, tenant_id: str, *, grace: dt.timedelta) -> str:
        """Issue a new API key; the current one stays valid for ``grace`` (none: refused at
        once). A key replaced by an earlier rotation is refused from now on."""
        query = sa.select(tenants.c.api_key_hash).where(tenants.c.id == tenant_id)
        with self._engine.connect() as conn:
            current = conn.execute(query).scalar_one_or_none()
        if current is None:
            raise NotFound(f"no tenant with id {tenant_id}")
        key, digest = issue_secret(TENANT_KEY_PREFIX)
        until = self._grace_end(grace)
        # Literal values, not a column reference: MySQL assigns SET clauses in order. The
        # digest read is the condition, so a rotation that raced with this one wins alone.
        values = {
            "api_key_hash": digest,
            "previous_key_hash": current if until is not None else None,
            "previous_key_until": to_db(until),
        }
        self._update_tenant(tenant_id, values, current=current)
        return key

    def revoke_keys(self, tenant_id: str) -> None:
        """Refuse every key of the tenant from now on; a rotation issues a new one."""
        self._update_tenant(tenant_id, revoked_keys())

    def _update_tenant(
        self, tenant_id: str, values: dict[str, Any], *, current: str | None = None
    ) -> None:
        where = [tenants.c.id == tenant_id]
        if current is not None:
            where.append(tenants.c.api_key_hash == current)
        with self._engine.begin() as conn:
            done = conn.execute(tenants.update().where(*where).values(values)).rowcount
        if not done:
            raise NotFound(f"tenant {tenant_id} is gone or its key changed meanwhile; retry")

    def _one_tenant(self, where: sa.ColumnElement[bool]) -> Tenant | None:
        query = sa.select(*TENANT_COLUMNS).where(where)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _tenant(row) if row is not None else None


def revoked_keys() -> dict[str, Any]:
    """The tenant columns that refuse every key: the digest of a key nobody is shown."""
    _, unusable = issue_secret(TENANT_KEY_PREFIX)
    return {"api_key_hash": unusable, "previous_key_hash": None, "previous_key_until": None}


#: A tenant's columns, its quota overrides included: read with every key lookup, so that
#: enforcing quotas costs no query of its own.
TENANT_COLUMNS = (
    tenants.c.id,
    tenants.c.name,
    tenants.c.created_at,
    *(tenants.c[f"quota_{name}"] for name in QUOTA_NAMES),
)


def _tenant(row: sa.Row[*tuple[Any, ...]], *, key_until: dt.datetime | None = None) -> Tenant:
    overrides = QuotaOverrides(**{name: row._mapping[f"quota_{name}"] for name in QUOTA_NAMES})
    return Tenant(
        id=row.id,
        name=row.name,
        created_at=from_db_required(row.created_at),
        quotas=overrides,
        key_until=key_until,
    )
