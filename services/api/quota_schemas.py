"""The bodies of the quota routes: an operator's overrides in, a tenant's quotas out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.api.schemas import TenantOut


class QuotaValues(BaseModel):
    """One value per quota; null: unbounded (in force) or the default (override)."""

    max_pipelines: int | None = None
    max_backlog: int | None = None
    submit_rate: float | None = Field(
        default=None, description="Tasks a second, all API processes."
    )
    submit_burst: int | None = Field(
        default=None, description="The bucket: largest burst or batch."
    )
    max_request_bytes: int | None = None


class QuotasIn(BaseModel):
    """Overrides to set: a quota left out is unchanged, null returns it to the operator's
    default, 0 makes it unbounded for this tenant."""

    model_config = ConfigDict(extra="forbid")

    max_pipelines: int | None = Field(default=None, ge=0, le=1_000_000)
    max_backlog: int | None = Field(default=None, ge=0, le=10**12)
    submit_rate: float | None = Field(default=None, ge=0, le=10**9)
    submit_burst: int | None = Field(default=None, ge=0, le=10**9)
    max_request_bytes: int | None = Field(default=None, ge=0, le=2**40)


class PatchTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quotas: QuotasIn


class UsageOut(BaseModel):
    pipelines: int = Field(description="Live pipelines (those being deleted left out).")
    backlog: int = Field(
        description="Tasks queued or scheduled, as the grains last flushed them (every 2 s)."
    )


class TenantQuotasOut(TenantOut):
    quotas: QuotaValues = Field(description="In force: the overrides, else the defaults.")
    overrides: QuotaValues = Field(description="This tenant's own; null: the default.")
    usage: UsageOut
