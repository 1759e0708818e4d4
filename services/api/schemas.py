"""Request and response bodies of the HTTP API (pydantic models; OpenAPI at /docs)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from actors.pipeline.retry import check_execution_timeout
from services.api.errors import ApiError
from services.api.when import parse_duration
from services.deploy.charts import definition_of
from services.deploy.scaling import ScalingPolicy

#: Both are matched with ``fullmatch``: ``$`` alone also matches before a final newline,
#: which let ``"acme\n"`` through as a name (a Helm release, a namespace) or a task id.
#: The patterns stay valid JSON Schema (ECMA 262) for the OpenAPI.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
#: Client task ids appear in URLs and lease tokens: no '/', no spaces, at most 128 chars.
TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~@+=-]{0,127}$")
#: The rules as JSON Schema, for the OpenAPI (``params`` states them for path parameters).
NAME_SCHEMA: dict[str, Any] = {"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 40}
TASK_ID_SCHEMA: dict[str, Any] = {"pattern": TASK_ID_RE.pattern, "minLength": 1, "maxLength": 128}
_DURATION_RE = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_RETENTION_S = 60
MAX_RETENTION_S = 3650 * 86400


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1 to 40 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return value


def _task_id(value: str) -> str:
    if not TASK_ID_RE.fullmatch(value):
        raise ValueError(
            f"{value[:140]!r} is not a valid task id: use 1 to 128 letters, digits and "
            "'._:~@+=-', starting with a letter or digit"
        )
    return value


def parse_retention(value: object) -> int:
    """Seconds, from an integer or a duration such as ``90s``, ``15m``, ``24h``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError("retention must be seconds or a duration such as '7d'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION_RE.match(value.strip())):
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError("retention must be seconds or a duration such as '90s', '24h', '7d'")
    if not MIN_RETENTION_S <= seconds <= MAX_RETENTION_S:
        raise ValueError(f"retention must be between {MIN_RETENTION_S} s and 3650 days")
    return seconds


# The validators check the rules (with a detail that spells them out); the schema states
# them, so that a client (or a generated request) knows a valid name before it is refused.
Name = Annotated[str, AfterValidator(_name), Field(json_schema_extra=NAME_SCHEMA)]
TaskId = Annotated[str, AfterValidator(_task_id), Field(json_schema_extra=TASK_ID_SCHEMA)]
Retention = Annotated[int, BeforeValidator(parse_retention)]
Chart = Annotated[str, Field(min_length=1, max_length=1024)]
ChartVersion = Annotated[str, Field(min_length=1, max_length=128)]
MaxAttempts = Annotated[int, Field(ge=1, le=100)]


def _scaling(value: dict[str, Any]) -> dict[str, Any]:
    ScalingPolicy.from_mapping(value)  # ValueError: answered 422 with its message
    return value


def _values(value: dict[str, Any]) -> dict[str, Any]:
    """A definition the values give (``pipeline:`` and its siblings) is checked at the door,
    so a bad step (a handler that is not ``package.module:function``, a placeholder in
    quotes) is a 422 naming it, not a deployment that fails later."""
    if any(key in value for key in _DEFINITION_KEYS):
        # Without steps of its own the chart's stand in: a placeholder step lets the rest
        # be checked. ValueError: answered 422 with its message.
        definition_of({"pipeline": _CHART_STEPS, **value})
    return value


_DEFINITION_KEYS = ("pipeline", "timeout_s", "non_retryable_exit_codes")
_CHART_STEPS = [{"executor": "chart", "commands": ["true"]}]


Values = Annotated[
    dict[str, Any],
    AfterValidator(_values),
    Field(description="Helm values over the chart's own (charts/pipeline-lib/README.md)."),
]
Scaling = Annotated[
    dict[str, Any],
    AfterValidator(_scaling),
    Field(
        description="min_replicas (1), max_replicas (10), tasks_per_replica (10), idle_s "
        "(300), cooldown_s (60), keda {enabled, ...}: see charts/pipeline-lib/README.md."
    ),
]
LeaseTimeout = Annotated[int, Field(ge=1, le=86400)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- tenants and applications ---------------------------------------------------------------


class CreateTenant(_Request):
    name: Name


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: dt.datetime


class TenantCreated(TenantOut):
    api_key: str = Field(description="Shown once: keep it; only its digest is stored.")


class TenantList(BaseModel):
    tenants: list[TenantOut]


class CreateApplication(_Request):
    name: Name


class ApplicationOut(BaseModel):
    id: str
    name: str
    created_at: dt.datetime


class ApplicationList(BaseModel):
    applications: list[ApplicationOut]


# -- pipelines -----------------------------------------------------------------------------


def _seconds(value: object) -> float:
    """Seconds, from a number or a duration such as ``1s``, ``500ms``, ``5m``, ``PT1M``."""
    if isinstance(value, bool):
        raise ValueError("give seconds or a duration such as '1s' or '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value, field="backoff").total_seconds()
        except ApiError as err:
            raise ValueError(err.detail.removeprefix("backoff: ")) from err
    else:
        raise ValueError("give seconds or a duration such as '1s' or '5m'")
    if not 0 <= seconds <= 7 * 86400:
        raise ValueError("a backoff pause is between 0 s and 7 days")
    return seconds


Pause = Annotated[float, BeforeValidator(_seconds)]


def _deadline_span(value: object) -> float:
    """A default deadline: seconds or a duration, at most a year; 0 means none."""
    if isinstance(value, bool):
        raise ValueError("give seconds or a duration such as '10m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value, field="expires_after").total_seconds()
        except ApiError as err:
            raise ValueError(err.detail.removeprefix("expires_after: ")) from err
    else:
        raise ValueError("give seconds or a duration such as '10m'")
    if not 0 <= seconds <= 365 * 86400:
        raise ValueError("a default deadline is between 1 s and 365 days (0: none)")
    return seconds


DefaultDeadline = Annotated[float, BeforeValidator(_deadline_span)]


def execution_timeout_s(value: object, *, field: str = "execution_timeout") -> float:
    """An attempt's execution timeout: seconds or a duration, more than 0, at most 7 days."""
    if isinstance(value, bool):
        raise ValueError("give seconds or a duration such as '90s' or '15m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value, field=field).total_seconds()
        except ApiError as err:
            raise ValueError(err.detail.removeprefix(f"{field}: ")) from err
    else:
        raise ValueError("give seconds or a duration such as '90s' or '15m'")
    return check_execution_timeout(seconds)


def _pipeline_timeout(value: object) -> float:
    """A pipeline's execution timeout; 0 means none (on PATCH: clear it)."""
    if not isinstance(value, bool) and value in (0, "0"):
        return 0.0
    return execution_timeout_s(value)


#: A task's own execution timeout (Celery's ``time_limit``).
ExecutionTimeout = Annotated[
    float,
    BeforeValidator(execution_timeout_s),
    Field(
        description="How long one attempt may run (seconds, or '90s', '15m'; at most 7 "
        "days): the worker then kills it and reports a timeout, retried like a failure.",
        examples=["15m"],
    ),
]
PipelineExecutionTimeout = Annotated[float, BeforeValidator(_pipeline_timeout)]


class BackoffIn(_Request):
    """The pause before each next attempt: ``initial * multiplier ** (attempt - 1)``,
    at most ``max``, spread by ±``jitter``."""

    initial: Pause = Field(default=1.0, examples=["1s"])
    multiplier: float = Field(default=2.0, ge=1, le=10)
    max: Pause = Field(default=300.0, examples=["5m"])
    jitter: float = Field(default=0.1, ge=0, le=1)


class RetryIn(_Request):
    """What happens after a failed attempt (reported by the worker, or a lost lease)."""

    max_attempts: MaxAttempts | None = None
    backoff: BackoffIn | None = None


class CreatePipeline(_Request):
    name: Name
    chart: Chart = Field(description="Chart path, repository URL or OCI reference.")
    chart_version: ChartVersion | None = None
    values: Values = Field(default_factory=dict)
    topic: Literal["dedicated", "shared"] | None = Field(
        default=None,
        description="Where the pipeline's tasks travel, chosen now and never changed: "
        '"dedicated", a Kafka topic of its own (for big pipelines: `partitions` of them); '
        '"shared", one partition of the topic small pipelines share (`partitions` is then '
        "1). Absent: the operator's default (WSCHED_PIPELINE_TOPIC).",
        examples=["shared"],
    )
    partitions: int = Field(
        default=2,
        ge=1,
        le=128,
        description="Partitions of a dedicated topic (2 by default); never changes. A shared "
        "pipeline has 1.",
    )
    scaling: Scaling = Field(default_factory=dict)
    max_attempts: MaxAttempts = 3
    retry: RetryIn | None = Field(
        default=None,
        description="{max_attempts?, backoff?: {initial, multiplier, max, jitter}}; "
        "retry.max_attempts is the same setting as max_attempts.",
    )
    lease_timeout_s: LeaseTimeout = 30
    retention: Retention = Field(default=7 * 86400, description="Seconds, or e.g. '7d'.")
    expires_after: DefaultDeadline | None = Field(
        default=None,
        description="The deadline of tasks submitted without one, after they are due "
        "(seconds or e.g. '1h'); 0 or absent: none.",
    )
    execution_timeout: PipelineExecutionTimeout | None = Field(
        default=None,
        description="How long one attempt of a task may run (tasks without their own): "
        "seconds or e.g. '15m', at most 7 days; 0 or absent: the pipeline definition's "
        "timeout_s, else the worker's WSCHED_WORKER_TASK_TIMEOUT_S.",
        examples=["15m"],
    )


class PatchPipeline(_Request):
    chart: Chart | None = None
    chart_version: ChartVersion | None = None
    values: Values | None = None
    scaling: Scaling | None = None
    max_attempts: MaxAttempts | None = None
    retry: RetryIn | None = None
    lease_timeout_s: LeaseTimeout | None = None
    retention: Retention | None = None
    expires_after: DefaultDeadline | None = Field(
        default=None, description="The tasks' default deadline after they are due; 0 clears it."
    )
    execution_timeout: PipelineExecutionTimeout | None = Field(
        default=None,
        description="How long one attempt may run (tasks without their own); 0 clears it.",
        examples=["15m"],
    )

    @model_validator(mode="before")
    @classmethod
    def _immutable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "partitions" in data:
                raise ValueError(
                    "partitions cannot change: tasks are routed to partitions by id; "
                    "create a new pipeline instead"
                )
            if "topic" in data:
                raise ValueError(
                    "topic cannot change: the pipeline's queued tasks are on it, in order; "
                    "create a new pipeline instead"
                )
            if "name" in data:
                raise ValueError("a pipeline cannot be renamed; create a new one instead")
        return data


class PipelineOut(BaseModel):
    id: str
    name: str
    application: str
    chart: str
    chart_version: str | None
    values: dict[str, Any]
    partitions: int
    scaling: dict[str, Any]
    max_attempts: int
    retry: dict[str, Any] = Field(
        description="{max_attempts, backoff: {initial_s, multiplier, max_s, jitter}}"
    )
    lease_timeout_s: int
    retention_s: int
    expires_after_s: int | None = Field(
        description="The deadline given to tasks submitted without one, after they are due."
    )
    execution_timeout_s: float | None = Field(
        description="How long one attempt of a task without its own may run; null: the "
        "pipeline definition's timeout_s, else the worker's setting."
    )
    state: Literal["provisioning", "ready", "failed", "deleting"]
    reason: str = Field(description="Why the pipeline is failed, or what its deployment hit.")
    deployment: dict[str, Any]
    topic_mode: Literal["dedicated", "shared"] = Field(
        description="What was chosen at creation (the request's `topic`): a topic of its "
        "own, or a partition of the shared one."
    )
    topic: str = Field(
        description="The Kafka topic its tasks travel on: its own (wsched.p.<id>), or "
        "wsched.shared."
    )
    counts: dict[str, int] = Field(description="Tasks by status, as the scheduler last flushed.")
    created_at: dt.datetime
    updated_at: dt.datetime


class PipelineCreated(PipelineOut):
    worker_token: str = Field(description="Shown once: the workers' credential for gRPC.")


class PipelineList(BaseModel):
    pipelines: list[PipelineOut]


class PipelineDeleting(BaseModel):
    id: str
    state: Literal["deleting"]


# -- tasks ---------------------------------------------------------------------------------


class BatchItem(_Request):
    data: dict[str, Any]
    id: TaskId | None = None
    retry: RetryIn | None = Field(
        default=None, description="This task's own retry policy over its pipeline's."
    )
    execution_timeout: ExecutionTimeout | None = None
    run_at: str | None = Field(
        default=None,
        max_length=64,
        description="When to run it: an RFC 3339 time with its offset. In the past: now.",
        examples=["2026-11-26T12:00:00Z"],
    )
    delay: str | None = Field(
        default=None,
        max_length=64,
        description="Or how long from now: '90s', '15m', '1h30m', ISO 8601 'PT15M'.",
        examples=["15m"],
    )
    expires_at: str | None = Field(
        default=None,
        max_length=64,
        description="Deadline (RFC 3339): not started by then, the task ends `expired`.",
        examples=["2026-11-26T13:00:00Z"],
    )
    expires_after: str | None = Field(
        default=None,
        max_length=64,
        description="Or the deadline as a duration from now: '10m', 'PT1H'.",
        examples=["10m"],
    )


class SubmitBatch(_Request):
    tasks: list[BatchItem] = Field(min_length=1)


#: Ids one bulk request may name, and tasks one bulk request may act on.
MAX_BULK_TASKS = 1000


class BulkRequeue(_Request):
    """Dead tasks back to the queue: the ``ids`` given, else the first ``limit`` dead ones."""

    ids: list[TaskId] | None = Field(default=None, min_length=1, max_length=MAX_BULK_TASKS)
    status: Literal["dead"] = "dead"
    limit: int = Field(default=MAX_BULK_TASKS, ge=1, le=MAX_BULK_TASKS)


class BulkCancel(_Request):
    """Cancel the ``ids`` given, else the first ``limit`` tasks of ``status``."""

    ids: list[TaskId] | None = Field(default=None, min_length=1, max_length=MAX_BULK_TASKS)
    status: Literal["queued", "scheduled"] | None = None
    limit: int = Field(default=MAX_BULK_TASKS, ge=1, le=MAX_BULK_TASKS)


class BulkPurge(_Request):
    """Delete dead tasks that died before ``older_than``: the ``ids`` given, else the
    first ``limit`` such tasks."""

    status: Literal["dead"] = Field(description="Only dead tasks are purged.")
    older_than: str = Field(
        max_length=64,
        description="An RFC 3339 time (tasks that died before it), or a duration (tasks "
        "that died longer ago than that: '7d', '12h', 'PT1H').",
        examples=["7d", "2026-11-01T00:00:00Z"],
    )
    ids: list[TaskId] | None = Field(default=None, min_length=1, max_length=MAX_BULK_TASKS)
    limit: int = Field(default=MAX_BULK_TASKS, ge=1, le=MAX_BULK_TASKS)


class BulkResult(BaseModel):
    id: str
    result: Literal["requeueing", "cancelling", "purging", "skipped", "not_found"]
    status: str | None = Field(description="The task's stored status when it was read.")


class BulkOut(BaseModel):
    results: list[BulkResult]
    acted: int = Field(description="How many tasks are being requeued, cancelled or purged.")


class PurgeOut(BulkOut):
    older_than: dt.datetime = Field(description="The cutoff applied: tasks that died before it.")


class Accepted(BaseModel):
    id: str
    status: str


class BatchResult(BaseModel):
    id: str
    result: Literal["queued", "existing", "conflict"]
    status: str | None = Field(description="The task's status: queued, or the stored one.")
    detail: str | None = None


class BatchOut(BaseModel):
    results: list[BatchResult]
    queued: int
    existing: int
    conflicts: int


class TaskSummary(BaseModel):
    id: str
    status: str
    attempt: int
    error: str | None
    created_at: dt.datetime
    due_at: dt.datetime
    expires_at: dt.datetime | None = Field(
        description="The deadline: an attempt not started by then is not started."
    )
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker: str | None
    execution_timeout_s: float | None = Field(
        default=None, description="The task's own execution timeout; null: its pipeline's."
    )


class AttemptOut(BaseModel):
    attempt: int
    worker: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    outcome: str = Field(
        description="failed, timed_out (killed at its execution timeout), lease_lost (the "
        "worker went silent), or for the latest attempt the task's status"
    )
    error: str | None


class TaskOut(TaskSummary):
    data: Any = Field(description="The task's data, as submitted.")
    result: Any = Field(description="The worker's result, decoded as result_encoding says.")
    result_encoding: Literal["json", "text", "base64"] | None
    attempts: list[AttemptOut] | None = Field(
        default=None, description="Every attempt, oldest first; with ?attempts=true only."
    )


class TaskPage(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class StatsOut(BaseModel):
    counts: dict[str, int]
    backlog: int
    updated_at: dt.datetime | None
