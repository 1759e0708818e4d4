"""Value types of the task life cycle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from actors.pipeline.retry import Backoff, RetryOverride


class Status(StrEnum):
    #: Not due yet: waiting in the grain's timers (``timers.py``), never in its window.
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: Its deadline passed before an attempt started; never dispatched.
    EXPIRED = "expired"


TERMINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED, Status.EXPIRED}
)


class InvalidToken(ValueError):
    """A lease token that does not parse."""


class InvalidGrainKey(ValueError):
    """A grain key that does not parse, or names no pipeline."""


@dataclass(frozen=True, kw_only=True, order=True)
class GrainKey:
    """Names one grain: a pipeline, and a slice of it so a hot pipeline can later be split.

    ``str(key)`` is the ``<pipeline id>/<slice>`` text stored in ``grain_owners`` and
    ``grain_offsets`` and used as the actor runtime's key; ``parse`` is its inverse.
    """

    pipeline_id: str
    slice: int = 0

    def __post_init__(self) -> None:
        # A "/" in the id would make the stored text ambiguous to parse back.
        if not self.pipeline_id or "/" in self.pipeline_id:
            raise InvalidGrainKey(f"a grain key needs a pipeline id without '/': {self!r}")
        if self.slice < 0:
            raise InvalidGrainKey(f"a grain's slice is never negative: {self!r}")

    def __str__(self) -> str:
        return f"{self.pipeline_id}/{self.slice}"

    @classmethod
    def parse(cls, text: str) -> GrainKey:
        pipeline_id, slash, slice_text = text.rpartition("/")
        # Only the canonical spelling ("1", never "01" or "+1"), so parse and str agree.
        canonical = slice_text.isascii() and slice_text.isdigit()
        if not slash or not canonical or str(int(slice_text)) != slice_text:
            raise InvalidGrainKey(f"malformed grain key {text!r}: want <pipeline id>/<slice>")
        return cls(pipeline_id=pipeline_id, slice=int(slice_text))


@dataclass(frozen=True, kw_only=True)
class LeaseToken:
    """Identifies one grant of one attempt of a task by one incarnation of its grain.

    A task granted again after a lease expiry (new attempt) or a failover (new epoch)
    gets a different token, so a late report for the old grant can be told apart.
    """

    task_id: str
    attempt: int
    epoch: int

    def encode(self) -> str:
        return f"{self.epoch}.{self.attempt}.{self.task_id}"

    @classmethod
    def decode(cls, text: str) -> LeaseToken:
        parts = text.split(".", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[2]:
            raise InvalidToken(f"malformed lease token {text!r}")
        return cls(epoch=int(parts[0]), attempt=int(parts[1]), task_id=parts[2])


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    pipeline_id: str
    max_attempts: int = 3
    lease_timeout_s: float = 30.0
    retention_s: float = 7 * 24 * 3600
    #: Ready tasks kept in memory; the rest of the backlog stays in the store.
    window_tasks: int = 2000
    window_bytes: int = 64 * 1024 * 1024
    #: Not-yet-due tasks kept in memory, the soonest; the store keeps the rest.
    timer_heap: int = 10_000
    #: Timers due within this many seconds count as backlog for scaling (``scaling.lead_s``).
    lead_s: float = 0.0
    #: The pause before each next attempt, after a failure or a lost lease.
    backoff: Backoff = field(default_factory=Backoff)
    #: How long one attempt may run (tasks without their own); None: the workers decide
    #: (the pipeline definition's ``timeout_s``, else the agent's setting).
    execution_timeout_s: float | None = None
    #: How long a task admitted from a record may live in memory only (design D2): a task
    #: that ends sooner is written once, at its end, with its result; one that waits or
    #: runs longer is written ("pinned") by the first flush after it. 0: every task is
    #: written at admission. The stored offsets (the grain's on a topic of its own, the
    #: shard's on the shared topic) stay behind every task not yet written.
    write_delay_s: float = 0.0


@dataclass(kw_only=True)
class Task:
    """A task as the grain holds it. Mutable: only the grain changes it."""

    id: str
    attempt: int
    status: Status
    data: bytes
    due_at: dt.datetime
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    worker: str | None = None
    error: str | None = None
    #: The epoch of the grain incarnation that granted the current lease.
    lease_epoch: int | None = None
    #: Monotonic time the task became ready in this grain (for dispatch latency).
    ready_at: float | None = None
    #: An attempt not started by then is not started: the task ends ``expired``.
    expires_at: dt.datetime | None = None
    #: The task's own retry policy over its pipeline's, if it has one.
    retry: RetryOverride | None = None
    #: A schedule's run: the schedule and the nominal fire time (the worker gets it).
    schedule_id: str | None = None
    fire_at: dt.datetime | None = None
    #: The task's own execution timeout over its pipeline's, if it has one.
    execution_timeout_s: float | None = None
    #: The key of its timer row when the timer fired in memory: the row stays in the store
    #: (the task still ``scheduled`` there) until the flush that writes its next state.
    timer: tuple[dt.datetime, str] | None = None
    #: The W3C ``traceparent`` of its submit span, if the API traced it: the parent of
    #: each attempt's spans. Opaque here.
    trace_parent: str | None = None
    #: Admitted without a row (the write delay, design D2): its next write inserts it.
    unwritten: bool = False
    #: The digest of ``data`` as submitted (set while ``unwritten``: the insert stores it).
    data_sha256: bytes | None = None

    @classmethod
    def admitted(cls, new: NewTask, *, status: Status, unwritten: bool = False) -> Task:
        """The first attempt of a submitted task, as admission makes it."""
        return cls(
            id=new.id,
            attempt=1,
            status=status,
            data=new.data,
            due_at=new.due_at,
            created_at=new.created_at,
            expires_at=new.expires_at,
            retry=new.retry,
            schedule_id=new.schedule_id,
            fire_at=new.fire_at,
            execution_timeout_s=new.execution_timeout_s,
            trace_parent=new.trace_parent,
            unwritten=unwritten,
            data_sha256=new.data_sha256 if unwritten else None,
        )

    def expired(self, wall: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= wall

    @property
    def size(self) -> int:
        return len(self.data) + len(self.id)


@dataclass(frozen=True, kw_only=True)
class NewTask:
    """A submitted task read from the pipeline's topic, not yet admitted."""

    id: str
    data: bytes
    data_sha256: bytes
    due_at: dt.datetime
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    retry: RetryOverride | None = None
    #: A schedule's run (fired by the grain, or triggered and backfilled by the API).
    schedule_id: str | None = None
    fire_at: dt.datetime | None = None
    execution_timeout_s: float | None = None
    trace_parent: str | None = None


@dataclass(frozen=True, kw_only=True)
class Purge:
    """Delete a dead task that died before ``finished_before`` (a tenant's purge)."""

    task_id: str
    finished_before: dt.datetime


@dataclass(frozen=True, kw_only=True)
class AdmitBatch:
    """One batch of a pipeline's topic, as its grain admits it: all of it, or none.

    Built by the forwarder, carried by the actor's ``Admit`` message and applied by the
    core. Undecodable records are not in it (they are quarantined beside it), but their
    offsets are: ``offsets`` holds the next offset to read per partition, recorded with
    the batch so that a new owner resumes after it.
    """

    new: tuple[NewTask, ...] = ()
    cancels: tuple[str, ...] = ()
    requeues: tuple[str, ...] = ()
    #: Schedules whose definition changed: the grain reads them again.
    schedules: tuple[str, ...] = ()
    purges: tuple[Purge, ...] = ()
    offsets: Mapping[int, int] = field(default_factory=dict)
    #: Set by a shared topic's forwarder, which stores the offsets itself: called once
    #: every task of the batch has a row, when the grain held some in memory (the write
    #: delay, design D2; ``AdmitResult.held``). Until then the forwarder's stored offset
    #: stays at the batch's first record.
    on_written: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        # A read-only copy: the caller's dict may change while the batch is in flight.
        object.__setattr__(self, "offsets", MappingProxyType(dict(self.offsets)))


@dataclass(frozen=True, kw_only=True)
class AdmitResult:
    """What became of an ``AdmitBatch``."""

    admitted: int
    duplicates: int
    conflicts: int
    cancelled: int
    requeued: int
    purged: int = 0
    #: Some of its tasks are in memory without a row: ``AdmitBatch.on_written`` is called
    #: once they are written.
    held: bool = False


@dataclass(frozen=True, kw_only=True)
class GrainSnapshot:
    """A grain's figures as its actor last published them, for readers outside the actor.

    Metrics and the scaler read these instead of the live book, whose state only the
    actor's mailbox may touch. Published after activation and after each admission, tick
    and flush (never per poll or heartbeat: that is the hot path), so it is at most a
    tick old. An idle grain's slow tick leaves it older, but then only a message could
    change its figures, and an admission publishes.
    """

    key: GrainKey
    epoch: int
    #: Tasks by status plus ``backlog``, as ``TaskBook.stats()`` returns them.
    stats: Mapping[str, int]
    #: Monotonic totals: admitted, dispatched, retried, dead, ...
    totals: Mapping[str, int]
    #: Tasks held by workers now.
    leased: int
    #: Monotonic seconds (the grain's clock) when it was taken.
    taken_at: float
    #: Scheduled tasks due within the pipeline's ``lead_s``: work the scaler prepares for.
    due_soon: int = 0
    #: The grain had nothing to do and ticked slowly (``PipelineCore.tickless``).
    idle: bool = False
    #: The versions of the schedules it fires (schedule id -> version); None: a grain
    #: that fires none (not its pipeline's first slice).
    schedule_versions: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))
        if self.schedule_versions is not None:
            versions = MappingProxyType(dict(self.schedule_versions))
            object.__setattr__(self, "schedule_versions", versions)
        object.__setattr__(self, "totals", MappingProxyType(dict(self.totals)))

    @property
    def backlog(self) -> int:
        return self.stats["backlog"]


@dataclass(frozen=True, kw_only=True)
class TaskChange:
    """The mutable columns of a task row, as the next flush must write them."""

    id: str
    attempt: int
    status: Status
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker: str | None
    error: str | None
    lease_epoch: int | None
    expire_at: dt.datetime | None
    #: When the attempt may run: a retry's backoff moves it.
    due_at: dt.datetime
    #: A timer row that fired in memory: this write ends it (``Task.timer``).
    timer: tuple[dt.datetime, str] | None = None
    #: The task has no row yet: this write inserts it, with these immutable columns.
    insert: Task | None = None

    @property
    def ended_timer(self) -> tuple[dt.datetime, str] | None:
        """The timer row this write deletes: the fired one, unless it is the row a
        scheduled change (re)writes itself."""
        if self.timer is None:
            return None
        if self.status is Status.SCHEDULED and self.timer == (self.due_at, self.id):
            return None
        return self.timer

    @classmethod
    def of(cls, task: Task, *, retention_s: float) -> TaskChange:
        expire_at = (
            task.finished_at + dt.timedelta(seconds=retention_s)
            if task.finished_at is not None and task.status in TERMINAL
            else None
        )
        return cls(
            id=task.id,
            attempt=task.attempt,
            status=task.status,
            started_at=task.started_at,
            finished_at=task.finished_at,
            worker=task.worker,
            error=task.error,
            lease_epoch=task.lease_epoch,
            expire_at=expire_at,
            due_at=task.due_at,
            timer=task.timer,
            insert=task if task.unwritten else None,
        )


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    """An attempt that did not end its task (it failed or lost its lease), kept when the
    next attempt is made. The task's row holds its latest attempt itself, so a task that
    succeeds at once writes no attempt record."""

    task_id: str
    attempt: int
    worker: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime
    #: ``failed`` (the worker reported it) or ``lease_lost`` (the worker went silent).
    outcome: str
    error: str | None
    #: Kept the pipeline's retention after the attempt ended (TiDB's TTL purges it).
    expire_at: dt.datetime


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class Report:
    token: LeaseToken
    outcome: Outcome
    result: bytes = b""
    error: str = ""
    #: The worker knows another attempt would fail the same way: end the task now.
    non_retryable: bool = False
    #: The worker killed the attempt at its execution timeout (a retryable failure).
    timed_out: bool = False


class Verdict(StrEnum):
    """What a heartbeat tells the worker about one of its leases."""

    OK = "ok"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"


class ReportAck(StrEnum):
    """What became of a report. ``ACCEPTED`` is only answered once it is durable."""

    ACCEPTED = "accepted"
    #: The token is not the task's current grant (expired, re-granted, or from another epoch).
    STALE = "stale"
    #: The same grant reported before; its first report stands.
    DUPLICATE = "duplicate"


@dataclass(frozen=True, kw_only=True)
class Grant:
    token: LeaseToken
    task: Task
    #: How long the attempt may run: the task's own timeout, else its pipeline's.
    execution_timeout_s: float | None = None
