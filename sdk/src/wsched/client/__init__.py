"""Clients of Workload Scheduler's HTTP API: :class:`Client` (blocking) and
:class:`AsyncClient` (asyncio), their typed answers and their errors.

The modules behind this one are private (``_sync``, ``_async``, ``_models``, ...); import
from here or from ``wsched``.
"""

from __future__ import annotations

from wsched.client._async import (
    AsyncApplications,
    AsyncClient,
    AsyncPipelines,
    AsyncTenants,
)
from wsched.client._async_schedules import AsyncScheduleRunHandle, AsyncSchedules
from wsched.client._async_tasks import AsyncTaskHandle, AsyncTasks
from wsched.client._errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PipelineFailed,
    PipelineTimeout,
    RateLimited,
    ServerError,
    TaskFailed,
    TaskTimeout,
    Unauthorized,
    Unavailable,
    WschedError,
)
from wsched.client._events import PipelineEvent, TaskChange
from wsched.client._models import (
    TERMINAL_STATUSES,
    Accepted,
    Application,
    Attempt,
    BatchOutcome,
    BatchResult,
    BulkOutcome,
    BulkResult,
    Pipeline,
    PipelineCreated,
    PipelineDeleting,
    Rotated,
    Stats,
    Task,
    TaskPage,
    TaskSummary,
    Tenant,
    TenantCreated,
    TenantQuotas,
    TenantStatus,
)
from wsched.client._options import Backoff, TaskRetry, TaskSpec, new_task_id
from wsched.client._retry import RequestRetry
from wsched.client._schedule_calls import Catchup
from wsched.client._schedule_models import (
    Backfilled,
    Schedule,
    ScheduleCounts,
    SchedulePage,
    ScheduleRun,
)
from wsched.client._sync import Applications, Client, Pipelines, Tenants
from wsched.client._sync_schedules import ScheduleRunHandle, Schedules
from wsched.client._sync_tasks import TaskHandle, Tasks
from wsched.client._waiting import LongPoll, PollWithBackoff, WaitStrategy

__all__ = [
    "TERMINAL_STATUSES",
    "Accepted",
    "ApiError",
    "Application",
    "Applications",
    "AsyncApplications",
    "AsyncClient",
    "AsyncPipelines",
    "AsyncScheduleRunHandle",
    "AsyncSchedules",
    "AsyncTaskHandle",
    "AsyncTasks",
    "AsyncTenants",
    "Attempt",
    "Backfilled",
    "Backoff",
    "BadRequest",
    "BatchOutcome",
    "BatchResult",
    "BulkOutcome",
    "BulkResult",
    "Catchup",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidRequest",
    "LongPoll",
    "NotFound",
    "PayloadTooLarge",
    "Pipeline",
    "PipelineCreated",
    "PipelineDeleting",
    "PipelineEvent",
    "PipelineFailed",
    "PipelineTimeout",
    "Pipelines",
    "PollWithBackoff",
    "RateLimited",
    "RequestRetry",
    "Rotated",
    "Schedule",
    "ScheduleCounts",
    "SchedulePage",
    "ScheduleRun",
    "ScheduleRunHandle",
    "Schedules",
    "ServerError",
    "Stats",
    "Task",
    "TaskChange",
    "TaskFailed",
    "TaskHandle",
    "TaskPage",
    "TaskRetry",
    "TaskSpec",
    "TaskSummary",
    "TaskTimeout",
    "Tasks",
    "Tenant",
    "TenantCreated",
    "TenantQuotas",
    "TenantStatus",
    "Tenants",
    "Unauthorized",
    "Unavailable",
    "WaitStrategy",
    "WschedError",
    "new_task_id",
]
