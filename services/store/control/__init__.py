"""The control plane's repository: tenants, applications, pipelines, and reads of tasks.

SQLAlchemy Core, synchronous (pymysql / sqlite3); async callers run it in worker threads.
Secrets (tenant API keys, worker tokens) are returned once, when issued, and checked by
their SHA-256 digests. A worker token is also kept encrypted (see
:mod:`services.store.tokens`), because a deployer must hand it to the workers it starts;
only :meth:`ControlStore.worker_token` decrypts it.

This package is the one entry point: :class:`ControlStore` is the union of one class per
section (``_tenants``, ``_tenant_deletions``, ``_applications``, ``_pipelines``,
``_schedules``, ``_task_reads``, ``_quotas``), and the records its callers need are
re-exported here, so that none imports a section module.
"""

from __future__ import annotations

from services.store.control._applications import ApplicationMethods
from services.store.control._pipelines import (
    PipelineMethods,
    PipelineNameRow,
    TokenDigests,
    pipeline_names,
    worker_token_digests,
    worker_token_digests_of,
)
from services.store.control._quotas import QuotaMethods
from services.store.control._schedules import ScheduleMethods
from services.store.control._task_reads import TaskReadMethods
from services.store.control._tenant_deletions import (
    STEP_DONE,
    STEP_NAMESPACE,
    STEP_PIPELINES,
    TenantDeletionMethods,
)
from services.store.control._tenants import TenantMethods
from services.store.records import (
    DEPLOYMENT_PENDING,
    PURGE_BATCH,
    TENANT_KEY_PREFIX,
    WORKER_TOKEN_PREFIX,
    Application,
    ControlError,
    ExistingTask,
    HasPipelines,
    NameTaken,
    NotFound,
    Pipeline,
    PipelineChanges,
    PipelineSpec,
    PipelineState,
    PipelineStats,
    ScheduleRecord,
    ScheduleRun,
    TaskRecord,
    Tenant,
    TenantDeletion,
    TokenUnavailable,
    hash_secret,
    issue_secret,
    new_id,
    new_ids,
    utcnow,
)

__all__ = [
    "DEPLOYMENT_PENDING",
    "PURGE_BATCH",
    "STEP_DONE",
    "STEP_NAMESPACE",
    "STEP_PIPELINES",
    "TENANT_KEY_PREFIX",
    "WORKER_TOKEN_PREFIX",
    "Application",
    "ControlError",
    "ControlStore",
    "ExistingTask",
    "HasPipelines",
    "NameTaken",
    "NotFound",
    "Pipeline",
    "PipelineChanges",
    "PipelineNameRow",
    "PipelineSpec",
    "PipelineState",
    "PipelineStats",
    "ScheduleRecord",
    "ScheduleRun",
    "TaskRecord",
    "Tenant",
    "TenantDeletion",
    "TokenDigests",
    "TokenUnavailable",
    "hash_secret",
    "issue_secret",
    "new_id",
    "new_ids",
    "pipeline_names",
    "utcnow",
    "worker_token_digests",
    "worker_token_digests_of",
]


class ControlStore(
    TenantMethods,
    TenantDeletionMethods,
    ApplicationMethods,
    PipelineMethods,
    ScheduleMethods,
    TaskReadMethods,
    QuotaMethods,
):
    """Tenants and their deletions, applications, pipelines and schedules; reads of tasks
    and of the grains' counters; tenants' usage and submit buckets."""
