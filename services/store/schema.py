"""Tables of the system of record (SQLAlchemy Core). Migrations live in ``migrations/``."""

from __future__ import annotations

import sqlalchemy as sa

from services.store.types import Blob, JsonText, NonClusteredPrimaryKey, Timestamp

metadata = sa.MetaData()

NAME = sa.String(40)
ID = sa.String(36)
#: Client-supplied task ids (idempotency keys) may be longer than a UUID.
TASK_ID = sa.String(128)
#: A W3C traceparent is 55 characters in version 00; room for a later version's.
TRACE_PARENT_MAX = 128

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False, unique=True),
    sa.Column("api_key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    #: The key a rotation replaced, valid until ``previous_key_until`` (the grace period).
    sa.Column("previous_key_hash", sa.String(64), nullable=True),
    sa.Column("previous_key_until", Timestamp, nullable=True),
    #: The tenant's Kubernetes namespace; NULL: ``wsched-<name>``. A tenant re-created
    #: under a name whose old namespace is still terminating gets another one.
    sa.Column("namespace", sa.String(63), nullable=True),
    #: The tenant's quota overrides (``services.quotas.QuotaOverrides``); NULL: the
    #: operator's default (``WSCHED_QUOTA_*``).
    sa.Column("quota_max_pipelines", sa.Integer, nullable=True),
    sa.Column("quota_max_backlog", sa.BigInteger, nullable=True),
    sa.Column("quota_submit_rate", sa.Float, nullable=True),
    sa.Column("quota_submit_burst", sa.Integer, nullable=True),
    sa.Column("quota_max_request_bytes", sa.BigInteger, nullable=True),
    sa.Index("ix_tenants_previous_key_hash", "previous_key_hash"),
)

#: A tenant's deletion, its progress for the operator; kept once finished, so that a
#: tenant re-created under the name knows the old namespace may still be terminating.
tenant_deletions = sa.Table(
    "tenant_deletions",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("namespace", sa.String(63), nullable=False),
    #: ``pipelines`` -> ``namespace`` -> ``done``
    sa.Column("step", sa.String(16), nullable=False),
    #: What the last pass hit (empty when it went well).
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("pipelines_left", sa.Integer, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Index("ix_tenant_deletions_namespace", "namespace"),
)

#: Each tenant's submit-rate token bucket, shared by every API process (drawn in slices,
#: see ``services.quotas``): the tokens left as of ``at_ms`` (wall clock, ms).
tenant_submit_buckets = sa.Table(
    "tenant_submit_buckets",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("tokens", sa.Float(precision=53), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)

applications = sa.Table(
    "applications",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("name", NAME, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_applications_tenant_name"),
)

pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("application_id", ID, nullable=False),
    sa.Column("name", NAME, nullable=False),
    # The name while the pipeline is live, NULL once it is being deleted, so that a
    # pipeline of the same name can be created while the old one's topic is going away.
    sa.Column("live_name", NAME, nullable=True),
    sa.Column("chart", sa.String(1024), nullable=False),
    sa.Column("chart_version", sa.String(128), nullable=True),
    sa.Column("values_json", JsonText, nullable=False),
    sa.Column("partitions", sa.Integer, nullable=False),
    #: ``dedicated`` (``wsched.p.<id>``) or ``shared`` (its shard's partition of
    #: ``wsched.shared``): ``services.placement.TopicMode``, chosen at creation.
    sa.Column("topic", sa.String(16), nullable=False, server_default="dedicated"),
    sa.Column("scaling_json", JsonText, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    #: The pause between attempts (``actors.pipeline.retry.Backoff``'s fields); NULL: the
    #: default.
    sa.Column("backoff_json", sa.Text, nullable=True),
    #: Tasks submitted without a deadline get this one (seconds after they are due).
    sa.Column("expires_after_s", sa.Integer, nullable=True),
    #: How long one attempt of a task may run (tasks without their own); NULL: the
    #: workers decide (the pipeline definition's ``timeout_s``, else the agent's setting).
    sa.Column("execution_timeout_s", sa.Float, nullable=True),
    sa.Column("lease_timeout_s", sa.Integer, nullable=False),
    sa.Column("retention_s", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("state_reason", sa.Text, nullable=False, default=""),
    sa.Column("deployment_json", JsonText, nullable=False),
    sa.Column("worker_token_hash", sa.String(64), nullable=False),
    # The token itself, Fernet-encrypted, for deployers to hand to the workers they start
    # (authentication uses the hash only). NULL for pipelines created before it was kept.
    sa.Column("worker_token_enc", sa.String(512), nullable=True),
    #: The token a rotation replaced, valid until ``previous_token_until``.
    sa.Column("previous_token_hash", sa.String(64), nullable=True),
    sa.Column("previous_token_until", Timestamp, nullable=True),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("application_id", "live_name", name="uq_pipelines_app_live_name"),
    sa.Index("ix_pipelines_shard", "shard"),
)

#: Counters the pipeline's grain keeps, written with each flush; ``/stats`` reads them.
pipeline_stats = sa.Table(
    "pipeline_stats",
    metadata,
    sa.Column("pipeline_id", ID, primary_key=True),
    sa.Column("counts_json", JsonText, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("id", TASK_ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("due_at", Timestamp, nullable=False),
    sa.Column("data", Blob, nullable=False),
    sa.Column("data_sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("worker", sa.String(255), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("lease_epoch", sa.BigInteger, nullable=True),
    #: The deadline: an attempt not started by then is not started (status ``expired``).
    sa.Column("expires_at", Timestamp, nullable=True),
    #: The task's own retry policy (``RetryOverride``) as JSON; NULL: the pipeline's.
    sa.Column("policy_json", sa.Text, nullable=True),
    sa.Column("expire_at", Timestamp, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    #: A schedule's run: the schedule's id and the nominal fire time (NULL otherwise). Not
    #: indexed: a run's id is ``<schedule id>@<fire time>``, so the primary key finds runs.
    sa.Column("schedule_id", ID, nullable=True),
    sa.Column("fire_at", Timestamp, nullable=True),
    #: The W3C ``traceparent`` of the task's submit span when the API traced it (records
    #: paged back from here have no Kafka headers); NULL otherwise.
    sa.Column("trace_parent", sa.String(TRACE_PARENT_MAX), nullable=True),
    #: What the worker reported with the end of the last attempt; NULL: no result (yet).
    #: In the row (design D1): a table of its own cost a write per finished task.
    sa.Column("result", Blob, nullable=True),
    NonClusteredPrimaryKey("pipeline_id", "id", name="pk_tasks"),
    sa.Index("ix_tasks_pipeline_status_id", "pipeline_id", "status", "id"),
)

#: Fencing: one row per grain; activation increments the epoch, every flush checks it.
grain_owners = sa.Table(
    "grain_owners",
    metadata,
    sa.Column("grain_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    #: The wake-up index (design D4): a grain that deactivates with timers or schedules
    #: writes when it must be active again and its placement shard; its next claim clears
    #: both. Each replica reads its shards' due rows through ``ix_grain_owners_wake``.
    sa.Column("shard", sa.SmallInteger, nullable=True),
    sa.Column("wake_at", Timestamp, nullable=True),
    sa.Index("ix_grain_owners_wake", "shard", "wake_at"),
)

#: The next Kafka offset to admit per partition, written in the flush transaction.
grain_offsets = sa.Table(
    "grain_offsets",
    metadata,
    sa.Column("grain_id", sa.String(64), nullable=False),
    sa.Column("topic_partition", sa.Integer, nullable=False),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("grain_id", "topic_partition", name="pk_grain_offsets"),
)

#: Tasks that are not due yet, in the order the grain fires them (design D4): only such
#: tasks write a row here, so immediate tasks pay nothing for timers.
task_timers = sa.Table(
    "task_timers",
    metadata,
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("due_at", Timestamp, nullable=False),
    sa.Column("task_id", TASK_ID, nullable=False),
    sa.PrimaryKeyConstraint("pipeline_id", "due_at", "task_id", name="pk_task_timers"),
)

#: Attempts that ended without ending their task (failed, or their lease was lost), kept
#: as the task's history; a task's row holds its latest attempt itself.
task_attempts = sa.Table(
    "task_attempts",
    metadata,
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("task_id", TASK_ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(255), nullable=True),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("ended_at", Timestamp, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("expire_at", Timestamp, nullable=False),
    sa.PrimaryKeyConstraint("pipeline_id", "task_id", "attempt", name="pk_task_attempts"),
)

#: Schedule definitions, written by the API only; ``version`` grows with every change so
#: the firing grain can tell what it has not seen. A deleted schedule's row is deleted: a
#: schedule re-created under the same name gets a new id, so its runs never collide.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("name", NAME, nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("pipeline_id", "name", name="uq_schedules_pipeline_name"),
)

#: A schedule's firing state (``actors.pipeline.schedules.ScheduleState``), written by
#: the firing grain only, in the transaction that inserts the runs' tasks.
schedule_state = sa.Table(
    "schedule_state",
    metadata,
    sa.Column("schedule_id", ID, primary_key=True),
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("state_json", sa.Text, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_schedule_state_pipeline", "pipeline_id"),
)

#: Records that could not be decoded: kept, counted and skipped.
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("topic_partition", sa.Integer, nullable=False),
    sa.Column("record_offset", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", Blob, nullable=False),
    sa.Column("quarantined_at", Timestamp, nullable=False),
    sa.UniqueConstraint(
        "pipeline_id", "topic_partition", "record_offset", name="uq_quarantine_record"
    ),
)

#: Tables that get a TTL attribute on TiDB (a batched purge elsewhere), by column.
TTL_TABLES = {"tasks": "expire_at", "task_attempts": "expire_at"}
#: Tables whose hidden row ids are scattered on TiDB to avoid a write hotspot.
SHARDED_TABLES = ("tasks",)
