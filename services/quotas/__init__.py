"""Tenants' quotas: the values in force, the submit rate's shared token bucket, the backlog.

Pure and port-based: the API wires the database behind :class:`SharedBuckets` and the
backlog's reader; unit tests use :class:`MemoryBuckets`.
"""

from __future__ import annotations

from services.quotas._backlog import BacklogGauge
from services.quotas._bucket import BucketState, Draw, draw, full, refill, retry_after_s
from services.quotas._errors import QuotaStoreUnavailable
from services.quotas._limiter import MemoryBuckets, SharedBuckets, SubmitLimiter
from services.quotas._policy import QUOTA_NAMES, QuotaOverrides, Quotas, effective

__all__ = [
    "QUOTA_NAMES",
    "BacklogGauge",
    "BucketState",
    "Draw",
    "MemoryBuckets",
    "QuotaOverrides",
    "QuotaStoreUnavailable",
    "Quotas",
    "SharedBuckets",
    "SubmitLimiter",
    "draw",
    "effective",
    "full",
    "refill",
    "retry_after_s",
]
