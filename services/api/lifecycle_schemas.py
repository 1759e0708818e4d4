"""Bodies of the key, token and tenant-deletion routes (``routes/tenants.py``,
``routes/pipelines.py``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from services.api.quota_schemas import TenantQuotasOut
from services.api.schemas import TenantOut, _Request

#: The longest grace period a rotated-out key or token may keep: a week.
MAX_GRACE_S = 7 * 86400


class Rotate(_Request):
    grace_s: int = Field(
        default=0,
        ge=0,
        le=MAX_GRACE_S,
        description=(
            "Seconds the replaced key or token stays valid (0: refused at once); at most "
            f"{MAX_GRACE_S}. A key or token replaced by an earlier rotation is refused "
            "from now on."
        ),
    )


class KeyRotated(BaseModel):
    api_key: str = Field(description="Shown once: keep it; only its digest is stored.")
    previous_key_valid_until: dt.datetime | None = Field(
        description="When the replaced key stops being accepted (null: already refused)."
    )


class KeysRevoked(BaseModel):
    revoked: Literal[True] = True
    detail: str


class TokenRotated(BaseModel):
    worker_token: str = Field(description="Shown once; the workers are redeployed with it.")
    previous_token_valid_until: dt.datetime | None = Field(
        description="When the replaced token stops being accepted (null: already refused)."
    )


class DeletionOut(BaseModel):
    step: Literal["pipelines", "namespace", "done"] = Field(
        description="pipelines: deleting them; namespace: removing it; done: the tenant is gone"
    )
    pipelines_left: int | None = Field(description="null until the first pass counted them")
    namespace: str
    detail: str = Field(description="What the last pass hit; empty when it went well.")
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None


class TenantState(TenantOut):
    state: Literal["active", "deleting", "deleted"]
    deletion: DeletionOut | None = None


class TenantDetail(TenantQuotasOut):
    state: Literal["active", "deleting", "deleted"]
    deletion: DeletionOut | None = None
