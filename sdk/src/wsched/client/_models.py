"""What the API answers, as frozen dataclasses.

Why dataclasses and not pydantic: the SDK is installed into other people's applications,
and a client library that requires pydantic (a compiled core, a major version that
applications pin one way or the other) imposes that choice on them; the answers are
already validated by the server. Each model is built by an explicit ``from_json`` that
ignores fields it does not know, so a newer API does not break an older client, and
keeps the answer as sent in ``raw`` (not compared, not shown) for fields added since.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Statuses a task does not leave (``dead`` ones may be requeued, as a new attempt).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "dead", "cancelled", "expired"})

Json = Mapping[str, Any]


def _time(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value))


def _maybe_time(value: Any) -> dt.datetime | None:
    return None if value is None else _time(value)


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """A tenant (operator's view)."""

    id: str
    name: str
    created_at: dt.datetime
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Tenant:
        """Read an answer of ``GET /api/tenants``."""
        return cls(**_tenant_fields(body))


def _tenant_fields(body: Json) -> dict[str, Any]:
    """What every answer naming a tenant carries."""
    return {
        "id": body["id"],
        "name": body["name"],
        "created_at": _time(body["created_at"]),
        "raw": body,
    }


@dataclass(frozen=True, kw_only=True)
class TenantCreated(Tenant):
    """A tenant just created, with its API key: shown once, only its digest is stored."""

    api_key: str

    @classmethod
    def from_json(cls, body: Json) -> TenantCreated:
        """Read the answer of ``POST /api/tenants``."""
        return cls(**_tenant_fields(body), api_key=body["api_key"])


@dataclass(frozen=True, kw_only=True)
class TenantStatus(Tenant):
    """A tenant with its state: ``active``, ``deleting`` or ``deleted``; ``deletion``
    says how far a deletion got (``step``, ``pipelines_left``, ``namespace``, ``detail``)."""

    state: str = "active"
    deletion: Json | None = None

    @classmethod
    def from_json(cls, body: Json) -> TenantStatus:
        """Read the answer of ``DELETE /api/tenants/{tenant}``."""
        return cls(**_tenant_fields(body), **_state_fields(body))


def _state_fields(body: Json) -> dict[str, Any]:
    return {"state": body.get("state", "active"), "deletion": body.get("deletion")}


@dataclass(frozen=True, kw_only=True)
class TenantQuotas(TenantStatus):
    """A tenant with its quotas and usage (``GET /api/tenant``, ``/api/tenants/{name}``),
    and for the operator its state and deletion (:class:`TenantStatus`).

    ``quotas`` are the values in force (None: unbounded), ``overrides`` the tenant's own
    (None: the operator's default), ``usage`` its live ``pipelines`` and ``backlog``.
    """

    quotas: Mapping[str, float | None]
    overrides: Mapping[str, float | None]
    usage: Mapping[str, int]

    @classmethod
    def from_json(cls, body: Json) -> TenantQuotas:
        """Read a tenant answered with its quotas."""
        return cls(
            **_tenant_fields(body),
            **_state_fields(body),
            quotas=dict(body["quotas"]),
            overrides=dict(body["overrides"]),
            usage=dict(body["usage"]),
        )


@dataclass(frozen=True, kw_only=True)
class Rotated:
    """A new secret, shown once: a tenant's API key (``rotate_key``) or a pipeline's
    worker token (``rotate_token``, its workers deployed again with it); and when the
    one it replaced stops working (None: already)."""

    secret: str
    previous_valid_until: dt.datetime | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json, *, field_name: str) -> Rotated:
        """Read the answer of a rotation whose new secret is the field ``field_name``."""
        until = next((v for k, v in body.items() if k.startswith("previous_")), None)
        return cls(secret=body[field_name], previous_valid_until=_maybe_time(until), raw=body)


@dataclass(frozen=True, kw_only=True)
class Application:
    """A tenant's application: a named group of pipelines."""

    id: str
    name: str
    created_at: dt.datetime
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Application:
        """Read an application as the API answers it."""
        return cls(id=body["id"], name=body["name"], created_at=_time(body["created_at"]), raw=body)


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """A pipeline: its chart, settings, state (provisioning, ready, failed, deleting) and
    task counts as the scheduler last flushed them."""

    id: str
    name: str
    application: str
    chart: str
    chart_version: str | None
    values: Json
    partitions: int
    scaling: Json
    max_attempts: int
    retry: Json
    lease_timeout_s: int
    retention_s: int
    expires_after_s: int | None
    state: str
    reason: str
    deployment: Json
    #: ``dedicated`` (a Kafka topic of its own) or ``shared`` (a partition of the shared
    #: topic), as chosen at creation.
    topic_mode: str
    #: The Kafka topic its tasks travel on.
    topic: str
    counts: Mapping[str, int]
    created_at: dt.datetime
    updated_at: dt.datetime
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Pipeline:
        """Read a pipeline as the API answers it."""
        return cls(**_pipeline_fields(body))


def _pipeline_fields(body: Json) -> dict[str, Any]:
    plain = [
        *("id", "name", "application", "chart", "chart_version", "values", "partitions"),
        *("scaling", "max_attempts", "retry", "lease_timeout_s", "retention_s", "state"),
        *("reason", "deployment", "topic", "counts"),
    ]
    return {
        **{name: body[name] for name in plain},
        "expires_after_s": body.get("expires_after_s"),
        # An API from before the choice existed gave every pipeline a topic of its own.
        "topic_mode": body.get("topic_mode", "dedicated"),
        "created_at": _time(body["created_at"]),
        "updated_at": _time(body["updated_at"]),
        "raw": body,
    }


@dataclass(frozen=True, kw_only=True)
class PipelineCreated(Pipeline):
    """A pipeline just created, with its workers' token: shown once."""

    worker_token: str

    @classmethod
    def from_json(cls, body: Json) -> PipelineCreated:
        """Read the answer of ``POST .../pipelines``."""
        return cls(**_pipeline_fields(body), worker_token=body["worker_token"])


@dataclass(frozen=True, kw_only=True)
class PipelineDeleting:
    """A pipeline whose deletion has started: its name is free at once."""

    id: str
    state: str
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> PipelineDeleting:
        """Read the answer of ``DELETE .../pipelines/{p}``."""
        return cls(id=body["id"], state=body["state"], raw=body)


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt at a task: who ran it, when, and how it ended."""

    attempt: int
    worker: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    #: failed, lease_lost (the worker went silent), or for the latest the task's status.
    outcome: str
    error: str | None

    @classmethod
    def from_json(cls, body: Json) -> Attempt:
        """Read one item of a task's ``attempts``."""
        return cls(
            attempt=body["attempt"],
            worker=body.get("worker"),
            started_at=_maybe_time(body.get("started_at")),
            ended_at=_maybe_time(body.get("ended_at")),
            outcome=body["outcome"],
            error=body.get("error"),
        )


@dataclass(frozen=True, kw_only=True)
class TaskSummary:
    """A task as listed: status and times, without its data and result."""

    id: str
    status: str
    attempt: int
    error: str | None
    created_at: dt.datetime
    due_at: dt.datetime
    #: The deadline: an attempt not started by then is not started.
    expires_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker: str | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """Whether the task has reached a status it does not leave by itself."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: Json) -> TaskSummary:
        """Read one item of a task listing."""
        return cls(**_summary_fields(body))


def _summary_fields(body: Json) -> dict[str, Any]:
    return {
        "id": body["id"],
        "status": body["status"],
        "attempt": body["attempt"],
        "error": body.get("error"),
        "created_at": _time(body["created_at"]),
        "due_at": _time(body["due_at"]),
        "expires_at": _maybe_time(body.get("expires_at")),
        "started_at": _maybe_time(body.get("started_at")),
        "finished_at": _maybe_time(body.get("finished_at")),
        "worker": body.get("worker"),
        "raw": body,
    }


@dataclass(frozen=True, kw_only=True)
class Task(TaskSummary):
    """A task with its data and result.

    ``result`` is decoded as ``result_encoding`` says: ``json`` (any JSON value), ``text``
    (a string) or ``base64`` (bytes a worker reported that are not UTF-8).
    """

    data: Any
    result: Any
    result_encoding: str | None
    #: Every attempt, oldest first, when asked for (``attempts=True``); else None.
    attempts: tuple[Attempt, ...] | None = None

    @classmethod
    def from_json(cls, body: Json) -> Task:
        """Read the answer of ``GET .../tasks/{id}`` (or a resubmit's 200)."""
        attempts = body.get("attempts")
        return cls(
            **_summary_fields(body),
            data=body.get("data"),
            result=body.get("result"),
            result_encoding=body.get("result_encoding"),
            attempts=None if attempts is None else tuple(Attempt.from_json(a) for a in attempts),
        )


@dataclass(frozen=True, kw_only=True)
class TaskPage:
    """One page of a listing; pass ``next_cursor`` back for the next (None: the last)."""

    tasks: tuple[TaskSummary, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Json) -> TaskPage:
        """Read the answer of ``GET .../tasks``."""
        return cls(
            tasks=tuple(TaskSummary.from_json(t) for t in body["tasks"]),
            next_cursor=body.get("next_cursor"),
        )


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """A request the API took on (202): the task's id and what is happening to it."""

    id: str
    #: queued, scheduled, cancelling, requeueing.
    status: str
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Accepted:
        """Read a 202 answer about one task."""
        return cls(id=body["id"], status=body["status"], raw=body)


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """What became of one item of a batch submit."""

    id: str
    #: queued (new), existing (submitted before with the same data: nothing done), or
    #: conflict (the id is taken by other data; ``detail`` says so).
    result: str
    status: str | None
    detail: str | None = None

    @classmethod
    def from_json(cls, body: Json) -> BatchResult:
        """Read one item of a batch answer."""
        return cls(
            id=body["id"],
            result=body["result"],
            status=body.get("status"),
            detail=body.get("detail"),
        )


@dataclass(frozen=True, kw_only=True)
class BatchOutcome:
    """Every item of a ``submit_many``, in the order given, over all its requests."""

    results: tuple[BatchResult, ...]
    queued: int
    existing: int
    conflicts: int

    @property
    def ids(self) -> tuple[str, ...]:
        """The tasks' ids in the order given (ids the client chose where none was set)."""
        return tuple(r.id for r in self.results)


@dataclass(frozen=True, kw_only=True)
class BulkResult:
    """What a bulk requeue or cancel did to one task."""

    id: str
    #: requeueing, cancelling, skipped (not dead / already finished) or not_found.
    result: str
    status: str | None

    @classmethod
    def from_json(cls, body: Json) -> BulkResult:
        """Read one item of a bulk answer."""
        return cls(id=body["id"], result=body["result"], status=body.get("status"))


@dataclass(frozen=True, kw_only=True)
class BulkOutcome:
    """The answer of ``tasks:requeue`` or ``tasks:cancel``: one result per task."""

    results: tuple[BulkResult, ...]
    #: How many tasks are being requeued or cancelled.
    acted: int

    @classmethod
    def from_json(cls, body: Json) -> BulkOutcome:
        """Read a bulk answer."""
        return cls(
            results=tuple(BulkResult.from_json(r) for r in body["results"]), acted=body["acted"]
        )


@dataclass(frozen=True, kw_only=True)
class Stats:
    """A pipeline's tasks by status and its backlog, as the scheduler last flushed them."""

    counts: Mapping[str, int]
    backlog: int
    updated_at: dt.datetime | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Stats:
        """Read the answer of ``GET .../stats``."""
        return cls(
            counts=dict(body["counts"]),
            backlog=body["backlog"],
            updated_at=_maybe_time(body.get("updated_at")),
            raw=body,
        )
